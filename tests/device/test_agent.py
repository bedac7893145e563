# Device tests for upcert.agent and upcert.app: log-line contract, telemetry, commands, clock and
# certificate refusals, backoff, KeyboardInterrupt. Real x509/config/store modules; fake clock,
# in-memory store and a fake broker on FakeSock.
import json
import os
import sys

from agentfakes import CERT_ID, CERT_NOT_AFTER, CERT_NOT_BEFORE, DAY, FakeClock, FakeStore, config
from fakesock import FakeBroker, eq, has, publish_packet, raises
from upcert.agent import Agent
from upcert.errors import ConnectError


def _agent(broker=None, clock=None, connect=None, **over):
    lines = []
    sleeps = []
    broker = broker or FakeBroker()
    a = Agent(
        config(**over), FakeStore(), clock or FakeClock(), connect or broker.socket, lines.append
    )
    a.sleep_ms = sleeps.append
    return a, broker, lines, sleeps


def _replies(broker):
    return [json.loads(p) for t, p in broker.published if t == b"things/dev1/replies"]


def test_connect_publish_log_lines():
    a, broker, lines, _ = _agent(telemetry_interval_s=0)
    a.run(max_cycles=2)
    eq(lines[0], "upcert: connecting localhost:8883 as dev1", "connecting line")
    has(
        lines[1],
        "upcert: connected TLS 1.2 ",
        " cert 954ae69b4763ca7a expires 2049-12-31T23:59:59Z (8386 days)",
    )
    eq(lines[2:], ["upcert: published telemetry seq=1", "upcert: published telemetry seq=2"], "log")
    eq(broker.subscribed, [b"things/dev1/commands"], "subscribed")
    eq(broker.disconnected, True, "DISCONNECT at the end")
    t, p = broker.published[0]
    eq(t, b"things/dev1/telemetry", "topic")
    m = json.loads(p)
    eq(
        sorted(m.keys()),
        sorted(["thing", "uptime_s", "free_heap", "cert_id", "days_left", "clock", "seq", "tls",
                "dropped"]),
        "keys",
    )
    eq(
        (m["thing"], m["cert_id"], m["days_left"], m["clock"], m["seq"]),
        ("dev1", CERT_ID, 8386, "trusted", 1),
        "fields",
    )
    if not m["free_heap"] > 0:
        raise AssertionError("free_heap")


def test_ping_unknown_and_malformed_commands():
    broker = FakeBroker()
    cmd = "things/dev1/commands"
    broker.after_publish = [
        publish_packet(cmd, b'{"cmd": "ping", "id": 7}', qos=1, pid=3),
        publish_packet(cmd, b'{"cmd": "reboot", "id": "r1"}'),
        publish_packet(cmd, b"{not json"),
        publish_packet(cmd, b"[1, 2]"),
        publish_packet("other/topic", b'{"cmd": "ping", "id": 8}'),
    ]
    a, broker, lines, _ = _agent(broker, telemetry_interval_s=0)
    a.run(max_cycles=1)
    r = _replies(broker)
    eq(len(r), 4, "one reply per command on our topic")
    eq((r[0]["id"], r[0]["cmd"], r[0]["ok"]), (7, "ping", True), "ping reply")
    if not isinstance(r[0]["uptime_s"], int):
        raise AssertionError("uptime_s")
    eq(
        (r[1]["id"], r[1]["ok"], r[1]["error"]),
        ("r1", False, "unknown command 'reboot'"),
        "unknown",
    )
    has(r[2]["error"], "malformed command: want a JSON object")
    has(r[3]["error"], "malformed command: want a JSON object")
    has("\n".join(lines), "upcert: command ping id=7 answered", "command refused: unknown command")


def test_clock_not_set_refuses_and_backs_off():
    calls = []
    clock = FakeClock(trusted=False, sync_ok=False)
    a, broker, lines, sleeps = _agent(clock=clock, connect=lambda h, p: calls.append(h))
    a.run(max_cycles=4)
    eq(calls, [], "never connects on an untrusted clock")
    eq(clock.syncs, 4, "tries to sync before each attempt")
    has(lines[0], "upcert: clock not set (reads 2000-01-01T00:00:05Z): sync NTP first; retry in 1.")
    eq(len(sleeps), 4, "one wait per attempt")
    for i, d in enumerate((1, 2, 4, 8)):  # doubling, plus up to 25 % jitter
        s = sleeps[i]
        if not d * 1000 <= s <= d * 1250:
            raise AssertionError("jitter out of range: %d" % s)


def test_clock_synced_by_agent_then_connects():
    clock = FakeClock(trusted=False, sync_ok=True)
    a, broker, lines, _ = _agent(clock=clock, telemetry_interval_s=0)
    a.run(max_cycles=1)
    has(lines[-1], "published telemetry seq=1")


def test_certificate_not_yet_valid_and_expired():
    for now, text in (
        (
            CERT_NOT_BEFORE - DAY,
            "device certificate not valid until 2026-01-01T00:00:00Z (clock reads 2025-12-31T00:00:00Z)",
        ),
        (CERT_NOT_AFTER + 1, "device certificate expired on 2049-12-31T23:59:59Z"),
    ):
        calls = []
        a, broker, lines, _ = _agent(
            clock=FakeClock(now), connect=lambda h, p, c=calls: c.append(h)
        )
        a.run(max_cycles=1)
        has(lines[0], "upcert: connection failed: " + text, "; retry in ")
        eq(calls, [], "no connection attempt")


def test_corrupt_certificate_refused():
    a, broker, lines, _ = _agent()
    a.store = FakeStore(cert=b"\x30\x03\x02\x01\x00")
    a.run(max_cycles=1)
    has(lines[0], "upcert: connection failed: device certificate unreadable (", "; retry in ")
    eq(broker.sock, None, "no connection attempt")


def test_backoff_capped_at_300_s():
    a, broker, lines, sleeps = _agent(connect=lambda h, p: 1 / 0)
    a.run(max_cycles=12)
    eq(a._backoff_s, 300, "cap")
    if not 300000 <= sleeps[-1] <= 375000 or sleeps[8] // 1000 < 256:
        raise AssertionError("backoff %r" % sleeps)


def test_connect_failure_logged_then_backoff_reset_after_report():
    broker = FakeBroker()
    tries = []

    def connect(host, port):
        tries.append(host)
        if len(tries) < 3:
            raise ConnectError("connection refused by %s:%s: wrong endpoint or port" % (host, port))
        return broker.socket()

    a, broker, lines, sleeps = _agent(broker, connect=connect, telemetry_interval_s=0)
    a.run(max_cycles=1)
    # The diagnosis's code (5 KB on a 32-bit port) left RAM: a board whose link failed once
    # would else carry it into every rotation.
    eq("upcert.diagnose" in sys.modules, False, "diagnose dropped after use")
    a.run(max_cycles=2)
    has(lines[1], "upcert: connection failed: connection refused by localhost:8883", "retry in 1.")
    has(lines[3], "retry in 2.")
    has(lines[-1], "published telemetry seq=1")
    eq(a._backoff_s, 0, "backoff reset by a good report")


def test_link_lost_after_good_report_reconnects():
    a, broker, lines, _ = _agent(telemetry_interval_s=0)
    a.cycle()
    broker.sock.eof()
    broker.sock.reply = None  # the broker is gone: no PUBACK, reads hit EOF
    a.cycle()
    eq(lines[-1], "upcert: link lost: the broker closed the connection", "link lost line")
    eq(a.connected, False, "dropped")
    a.connect = FakeBroker().socket
    a.cycle()
    has(lines[-1], "published telemetry seq=3")


def test_link_lost_before_any_report_backs_off():
    a, broker, lines, sleeps = _agent(FakeBroker(ack=False), telemetry_interval_s=0)
    a.mqtt.timeout_s = 0  # PUBACK wait ends at once
    a.run(max_cycles=1)
    has(lines[-1], "upcert: link lost: no PUBACK", "; retry in 1.")
    eq(len(sleeps), 1, "waited")


def test_mqtt_refusal_diagnosed():
    a, broker, lines, _ = _agent(FakeBroker(connack=5))
    a.run(max_cycles=1)
    has(lines[-1], "upcert: connection failed: not authorized (CONNACK 5)")
    a, broker, lines, _ = _agent(FakeBroker(suback=0x80))
    a.run(max_cycles=1)
    has(lines[-1], "connection failed: broker refused subscription to 'things/dev1/commands'")


def test_keyboard_interrupt_propagates():
    def connect(host, port):
        raise KeyboardInterrupt

    a, broker, lines, _ = _agent(connect=connect)
    raises(KeyboardInterrupt, a.run)


def test_memory_error_is_logged_not_fatal():
    def connect(host, port):
        raise MemoryError

    a, broker, lines, _ = _agent(connect=connect)
    a.run(max_cycles=1)
    has(lines[-1], "connection failed: out of memory")


def test_no_room_to_diagnose_is_logged_not_fatal():
    # At the edge of the heap even the diagnosis may not load: the exception's own words, the
    # backoff, the loop goes on.
    class NoRoom:
        def explain(self, *a):
            raise MemoryError

    def connect(host, port):
        raise ConnectError("refused by the broker")

    a, broker, lines, sleeps = _agent(connect=connect)
    sys.modules["upcert.diagnose"] = NoRoom()
    try:
        a.run(max_cycles=1)
    finally:
        sys.modules.pop("upcert.diagnose", None)
    has(lines[-1], "upcert: connection failed: ConnectError: refused by the broker", "retry in 1.")
    eq(len(sleeps), 1, "backed off")


def test_bad_client_id_rejected():
    raises(ValueError, Agent, config(client_id="x" * 129), FakeStore(), FakeClock(), None)


# --- app.main with the real config/store modules on files, a stand-in board module ---


class _Board:
    NAME = "fake"

    def __init__(self, store):
        self._store = store
        self.ups = 0
        self.clk = FakeClock(trusted=False, sync_ok=True)

    def network_up(self, cfg, timeout_ms=20000):
        self.ups += 1
        if self.ups < 2:
            raise OSError(113)  # EHOSTUNREACH while Wi-Fi associates

    def clock(self):
        return self.clk

    def store(self, cfg):
        return self._store


def _files(name, cfg='{"thing": "dev1", "endpoint": "localhost"}', roots=None):
    d = os.getenv("UPCERT_TEST_TMP", "/tmp") + "/" + name
    try:
        os.mkdir(d)
    except OSError:
        pass
    if cfg is not None:
        with open(d + "/config.json", "w") as f:
            f.write(cfg)
    if roots is not None:
        with open(d + "/roots.der", "wb") as f:
            f.write(roots)
    return d + "/config.json"


def _main(board, path):
    from upcert import app

    lines = []
    app.main(board, path, lines.append, lambda ms: None)
    return lines


def test_app_cannot_start_on_config_error():
    path = _files("cfgerr", cfg='{"thing": "dev1"}')
    lines = _main(_Board(FakeStore()), path)
    eq(len(lines), 1, "one line")
    has(lines[0], "upcert: cannot start: config ", "'endpoint' missing")


def test_app_missing_roots():
    path = _files("noroots")
    lines = _main(_Board(FakeStore()), path)
    has(lines[-1], "upcert: cannot start: trust anchors ", "roots.der missing")


def test_app_no_key_and_no_signer_refused():
    # key None: the key is in a secure element, so upcert's own TLS client would connect with
    # the store's signer; a store with neither is refused at start-up
    from certdata import EC_DER

    path = _files("se", roots=EC_DER)
    lines = _main(_Board(FakeStore(key=None)), path)
    has(lines[-1], "upcert: cannot start: ", "memory holds neither a private key nor a signer")


def test_app_secure_element_key_with_the_builtin_tls_refused():
    from certdata import EC_DER

    path = _files("se2", cfg='{"thing": "dev1", "endpoint": "localhost", "tls": "builtin"}',
                  roots=EC_DER)
    lines = _main(_Board(FakeStore(key=None)), path)
    has(lines[-1], "upcert: cannot start: ", "secure element", "takes only key bytes")


def test_app_bad_key_retries_network_never_logs_key():
    from certdata import EC_DER

    path = _files("badkey", roots=EC_DER)
    board = _Board(FakeStore(key=b"SECRETKEYBYTES"))
    lines = _main(board, path)
    has(lines[0], "upcert: network down: OSError", "retry in 1 s")
    has(
        lines[-1],
        "upcert: cannot start: device certificate or key rejected by mbedTLS (invalid key)",
    )
    for line in lines:
        if "SECRET" in line:
            raise AssertionError("key bytes in the log")


def test_app_clock_sync_retried_then_agent_runs():
    from certdata import EC_DER
    from upcert import tlsconn

    path = _files("clock", roots=EC_DER)
    board = _Board(FakeStore())
    board.clk.sync_ok = False
    made = []

    def fake_context(cert, key, roots, room=None):  # the test has no key for a real context
        made.append(len(roots))
        return None

    lines = []

    def log(line):
        lines.append(line)
        if len(lines) == 3:
            board.clk.sync_ok = True  # NTP answers after two failures
        if line.startswith("upcert: connecting"):
            raise KeyboardInterrupt  # what mpremote's Ctrl-C does: must reach the caller

    real = tlsconn.make_context
    tlsconn.make_context = fake_context
    try:
        from upcert import app

        raises(KeyboardInterrupt, app.main, board, path, log, lambda ms: None)
    finally:
        tlsconn.make_context = real
    eq(made, [1], "one root loaded")
    eq(
        lines[1],
        "upcert: clock not set (reads 2000-01-01T00:00:05Z): sync NTP first (NTP: OSError [Errno 110] ETIMEDOUT); retry in 1 s",
        "clock line",
    )
    has(lines[2], "retry in 2 s")
    eq(lines[-1], "upcert: connecting localhost:8883 as dev1", "agent started")
