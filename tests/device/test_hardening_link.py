# Device tests for the link's hardening (issue #11, items 5-8): a job document the device cannot
# hold or parse is REJECTED once and the next job runs; a command over max_message_bytes is
# skipped by its length, never read into RAM, and answered; an empty payload is a message; a
# burst of commands gets one reply per command in bounded memory, and telemetry goes on.
import json

from agentfakes import FakeClock, FakeStore, config
from agentrig import rig
from checks import eq, raises, true
from fakeaws import FakeAws
from fakesock import FakeBroker, FakeSock, publish_packet
from testca import TestCa
from upcert import config as config_mod
from upcert.agent import Agent
from upcert.big import Big
from upcert.errors import ConfigError
from upcert.mqtt import Client
from upcert.x509 import Certificate

CMD = "things/dev1/commands"
J = "$aws/things/dev1/jobs/"
ROTATE = {"operation": "rotate-certificate"}


def _connected(**kw):
    sock = FakeSock(b"\x20\x02\x00\x00")
    c = Client("dev1", **kw)
    c.connect(sock)
    del sock.writes[:]
    got = []
    c.set_callback(lambda t, m: got.append((t, m)))
    return c, sock, got


def _packets(wire):
    # (first byte, body) of each MQTT packet in a byte stream (what the device wrote).
    out = []
    i = 0
    while i < len(wire):
        op = wire[i]
        n = s = 0
        i += 1
        while True:
            b = wire[i]
            i += 1
            n |= (b & 0x7F) << s
            s += 7
            if not b & 0x80:
                break
        out.append((op, wire[i : i + n]))
        i += n
    return out


def _pubacks(sock):
    return [b[0] << 8 | b[1] for op, b in _packets(sock.wire.getvalue()) if op == 0x40]


def _replies(broker):
    return [json.loads(p) for t, p in broker.published if t == b"things/dev1/replies"]


def _agent(broker, **over):
    lines = []
    a = Agent(config(**over), FakeStore(), FakeClock(), broker.socket, lines.append)
    a.sleep_ms = lambda ms: None
    return a, lines


def _big_command(n, cid="big-1"):
    # A JSON command of exactly n bytes: the id first, a long string after it.
    head = b'{"id": "%s", "cmd": "ping", "pad": "' % cid
    return head + b"x" * (n - len(head) - 2) + b'"}'


# --- item 7: an empty payload is a message ------------------------------------------------------


def test_read_of_zero_bytes_leaves_the_socket_alone():
    class NoZero(FakeSock):
        def read(self, n):
            if not n:
                raise AssertionError("socket read for 0 bytes")
            return FakeSock.read(self, n)

    sock = NoZero(b"\x20\x02\x00\x00")
    c = Client("dev1")
    c.connect(sock)
    eq(c.sock.read(0), b"", "nothing to read")


def test_empty_payload_delivered_and_acknowledged():
    c, sock, got = _connected()
    sock.feed(publish_packet("c/x", b"", qos=1, pid=0x1234) + publish_packet("c/x", b"next"))
    c.service()
    eq(got, [(b"c/x", b""), (b"c/x", b"next")], "both delivered, the link in step")
    eq(sock.writes, [b"\x40\x02\x12\x34"], "PUBACK for the empty one")


def test_empty_command_answered_malformed():
    broker = FakeBroker()
    broker.after_publish = [publish_packet(CMD, b"", qos=1, pid=4)]
    a, lines = _agent(broker, telemetry_interval_s=0)
    a.run(max_cycles=2)
    eq(
        _replies(broker),
        [{"id": None, "ok": False, "error": "malformed command: want a JSON object"}],
        "answered",
    )
    true(not [x for x in lines if "link lost" in x], repr(lines))
    eq([x for x in lines if "telemetry" in x][-1], "upcert: published telemetry seq=2", "on")


# --- item 6: a payload over the limit is skipped by its length ----------------------------------


def test_payload_over_limit_skipped_unread_then_acknowledged():
    for chunk in (0, 7):  # whole reads, and records split anywhere
        c, sock, got = _connected()
        acked = []
        c.set_callback(
            lambda t, m, got=got, acked=acked, sock=sock: got.append((t, m))
            or acked.append(_pubacks(sock))
        )
        sock.chunk = chunk
        big = _big_command(60000)
        sock.feed(publish_packet(CMD, big, qos=1, pid=9) + publish_packet(CMD, b'{"id": 2}'))
        c.service()
        eq(len(got), 2, "both delivered")
        t, m = got[0]
        true(isinstance(m, Big), "a Big, not the payload: %r" % type(m))
        eq((t, m.n, m.limit, m.get("id", 1), m.get("cmd", 1)), (CMD.encode(), 60000, 4096,
           "big-1", "ping"), "what the callback knows of it")
        eq(got[1], (CMD.encode(), b'{"id": 2}'), "the next message: the stream kept in step")
        true(sock.biggest <= 512, "no read over the send buffer: %d" % sock.biggest)
        eq((acked[0], _pubacks(sock)), ([], [9]), "PUBACK after the callback, not before")


def test_limit_is_the_payload_not_the_packet():
    c, sock, got = _connected(limit=16)
    sock.feed(publish_packet("t", b"x" * 16, qos=1) + publish_packet("t", b"y" * 17, qos=1))
    c.service()
    eq(got[0], (b"t", b"x" * 16), "at the limit: held")
    eq((type(got[1][1]), got[1][1].n), (Big, 17), "over it: skipped")


def test_stray_packet_over_limit_skipped():
    # Not a PUBLISH, nor an ack we wait for: its body is read past, never held.
    c, sock, got = _connected(limit=64)
    sock.feed(b"\xb0\x90\x4e" + b"\x00" * 10000 + publish_packet("t", b"ok"))
    c.service()
    eq(got, [(b"t", b"ok")], "then the next packet")
    true(sock.biggest <= 512, "read in pieces: %d" % sock.biggest)


def test_big_scan_keeps_shallow_fields_only():
    doc = (
        b'{"clientToken": "t-\\"1", "timestamp": 17, "execution": {"jobId": "j1",'
        b' "jobDocument": {"jobId": "evil", "versionNumber": 99, "x": [1, {"id": 3}]},'
        b' "note": "' + b"n" * 200 + b'", "done": true, "status": "IN_PROGRESS",'
        b' "versionNumber": 2, "s": "a]}{,:\\\\"}, "id": -5}'
    )
    for step in (1, 3, len(doc)):
        b = Big(len(doc), 10)
        for i in range(0, len(doc), step):
            b.feed(memoryview(doc)[i : i + step])
        eq(
            (b.get("jobId", 2), b.get("versionNumber", 2), b.get("clientToken", 1)),
            ("j1", 2, 't-"1'),
            "members of execution, not of the document (step %d)" % step,
        )
        eq((b.get("timestamp", 1), b.get("id", 1), b.get("done", 2)), (17, -5, True), "scalars")
        eq((b.get("note", 2), b.get("jobDocument", 2), b.get("s", 2)), (None, None, "a]}{,:\\"),
           "too long, an object, brackets in a string")
        eq((b.get("jobId", 1), b.get("id", 2), b.get("nothing", 1)), (None, None, None), "depth")
        true(b'"execution"' in b and b'"t-\\"1"' in b and b"" in b, "keys, values, b''")
        true(b'"evil"' not in b and b'"t-1"' not in b, "not deeper, not a prefix")


def test_big_command_answered_and_link_kept():
    broker = FakeBroker()
    broker.after_publish = [
        publish_packet(CMD, _big_command(60000, "c60"), qos=1, pid=5),
        publish_packet(CMD, b'{"cmd": "ping", "id": "p1"}', qos=1, pid=6),
    ]
    a, lines = _agent(broker, telemetry_interval_s=0)
    a.run(max_cycles=2)
    r = _replies(broker)
    eq(r[0], {"id": "c60", "ok": False, "error": "command too large: 60000 bytes > 4096"}, "big")
    eq((r[1]["id"], r[1]["ok"]), ("p1", True), "the next command answered")
    true(broker.sock.biggest <= 4096, "never read whole: %d" % broker.sock.biggest)
    true("upcert: command refused: command too large: 60000 bytes > 4096" in lines, repr(lines))
    true(not [x for x in lines if "link lost" in x], repr(lines))
    eq(len(telemetry_of(broker)), 2, "telemetry goes on")


def telemetry_of(broker):
    return [p for t, p in broker.published if t == b"things/dev1/telemetry"]


def test_max_message_bytes_from_config():
    c = config_mod.validate({"thing": "dev1", "endpoint": "localhost"})
    eq(c["max_message_bytes"], 4096, "default")
    eq(Agent(c, FakeStore(), FakeClock(), None).mqtt.limit, 4096, "the client's limit")
    c = config_mod.validate({"thing": "dev1", "endpoint": "h", "max_message_bytes": 20000})
    eq(Agent(c, FakeStore(), FakeClock(), None).mqtt.limit, 20000, "set")
    for bad in (4095, 131073, "8192", 8192.0, None, True):
        raises(
            ConfigError,
            config_mod.validate,
            {"thing": "dev1", "endpoint": "h", "max_message_bytes": bad},
            contains="'max_message_bytes' must be an integer 4096..131072, got %r" % (bad,),
        )


# --- item 8: a burst of commands -----------------------------------------------------------------


def test_burst_of_500_commands_one_reply_each():
    broker = FakeBroker()
    broker.after_publish = [
        publish_packet(CMD, b'{"cmd": "ping", "id": %d}' % i, qos=1, pid=i + 1) for i in range(500)
    ]
    a, lines = _agent(broker, telemetry_interval_s=0)
    a.run(max_cycles=3)
    r = _replies(broker)
    ids = sorted(x["id"] for x in r)
    eq(ids, list(range(500)), "one reply per command, none lost, none twice")
    ok = [x for x in r if x["ok"]]
    busy = [x for x in r if not x["ok"]]
    true(ok, "some answered in full")
    eq({x["error"] for x in busy}, {"busy: too many commands, retry"}, "the others: busy")
    eq(_pubacks(broker.sock), list(range(1, 501)), "every command acknowledged, in order")
    eq(len(telemetry_of(broker)), 3, "telemetry goes on")
    n = sum(int(x.split()[4]) for x in lines if x.startswith("upcert: reply queue full: "))
    eq(n, len(busy), "busy replies logged as a count: %r" % lines[-5:])
    true(len(lines) < 60, "no log line per command: %d" % len(lines))


def test_busy_does_not_run_the_command():
    a = Agent(config(), FakeStore(), FakeClock(), None, print)
    eq(
        a.answer(b'{"cmd": "rotate", "id": 3}', True),
        {"id": 3, "cmd": "rotate", "ok": False, "error": "busy: too many commands, retry"},
        "busy",
    )
    eq(a.answer(b"[]", True)["error"], "malformed command: want a JSON object", "still malformed")


# --- item 5: jobs the device cannot hold or parse ------------------------------------------------


def _updates(aws, job):
    return [u for u in aws.updates if u[0] == job]


def test_huge_job_document_rejected_once_then_next_job_runs():
    a, aws, store, lines = rig()
    old = Certificate(store.certificate()).cert_id()
    aws.add_job("huge", {"operation": "rotate-certificate", "note": "x" * 30000})
    aws.add_job("j2", ROTATE)
    a.cycle()
    first = aws.sock
    for _ in range(3):
        a.cycle()
    j = aws.job("huge")
    why = j["details"].get("reason", "")
    true(why.startswith("job document too large: ") and why.endswith(" bytes > 4096"), why)
    n = int(why.split()[4])
    true(30000 < n < 31000, "the reply's length: %d" % n)
    eq(_updates(aws, "huge"), [("huge", "REJECTED")], "answered once")
    true("upcert: job huge REJECTED: " + why in lines, repr(lines))
    true(first.biggest <= 4096, "the reply was never read whole: %d" % first.biggest)
    eq(aws.job("j2")["status"], "SUCCEEDED", "the next job ran")
    true(Certificate(store.certificate()).cert_id() != old, "rotated by it")
    eq(len([x for x in lines if "link lost" in x]), 0, "the link held")


def test_deep_job_document_rejected_once():
    # 2000-deep lists (4.3 KB: under this device's limit): json parses them, but their repr
    # would exceed the recursion limit.
    a, aws, store, lines = rig(max_message_bytes=8192)
    aws.add_job("deep", b'{"operation": ' + b"[" * 2000 + b"]" * 2000 + b"}")
    aws.add_job("j3", ROTATE)
    for _ in range(4):
        a.cycle()
    eq(_updates(aws, "deep"), [("deep", "REJECTED")], "answered once")
    why = aws.job("deep")["details"]["reason"]
    eq(why, "unknown operation <class 'list'>: this device runs 'rotate-certificate'", "why")
    eq(aws.job("j3")["status"], "SUCCEEDED", "the next job ran")
    eq(len([x for x in lines if "link lost" in x]), 0, "the link held")


def _serve_rig(parse_error, fail_times=9):
    # jobs.serve on a start-next reply whose parsing raises parse_error (fail_times times), over
    # a client connected to FakeAws; the job j7 is IN_PROGRESS at version 2.
    from upcert import jobs

    aws = FakeAws(TestCa(), FakeClock())
    aws.add_job("j7", ROTATE, status="IN_PROGRESS", version=2)
    c = Client("dev1")
    c.connect(aws.socket())
    body = {"clientToken": "t-0", "timestamp": 3, "execution": aws.execution(aws.job("j7"))}
    raw = json.dumps(body).encode()
    said = []

    class Rot:
        jobs = J
        ms = 2000
        job = None
        n = 0

        def token(self):
            self.n += 1
            return "t-%d" % self.n

        def say(self, msg, what=""):
            said.append(what + msg)

    calls = []
    real = jobs.reply

    def reply(*args):
        calls.append(1)
        if len(calls) <= fail_times:
            raise parse_error
        return real(*args)

    jobs.reply = reply
    try:
        r = jobs.serve(Rot(), c, Certificate(FakeStore().cert), True, raw)
    finally:
        jobs.reply = real
    return r, aws, said, len(raw)


def test_job_reply_out_of_memory_rejected_once():
    r, aws, said, n = _serve_rig(MemoryError())
    eq(r, None, "no job to run")
    j = aws.job("j7")
    why = "job document cannot be parsed on the device (%d bytes): out of memory" % n
    eq((j["status"], j["details"], j["version"]), ("REJECTED", {"reason": why}, 3), "job")
    eq(said, ["job j7 REJECTED: " + why], "logged")


def test_job_reply_nested_too_deep_rejected():
    r, aws, said, n = _serve_rig(RuntimeError("maximum recursion depth exceeded"))
    eq(
        aws.job("j7")["details"],
        {"reason": "job document cannot be parsed on the device (%d bytes): maximum recursion"
         " depth exceeded" % n},
        "reason",
    )


def test_job_reply_transient_memory_error_parsed_again():
    r, aws, said, n = _serve_rig(MemoryError(), fail_times=1)
    eq(r, ("j7", 2), "parsed after a collection: the job runs")
    eq(aws.job("j7")["status"], "IN_PROGRESS", "not rejected")
