# Device tests for upcert.jobs (exact Jobs MQTT API topics and payloads) and the agent's
# rotation paths: a job at connect, notify-next while serving, the `rotate` command, unknown
# operations REJECTED, a lost SUCCEEDED report repeated after a reboot, FAILED after 3 tries,
# telemetry fields, app.main wiring. FakeAws plays AWS IoT; certificates are real (testca).
import json

from agentfakes import FakeClock, FakeStore, config
from agentrig import rig, telemetry
from checks import eq, raises, true
from fakeaws import FakeAws
from fakesock import publish_packet
from slotstore import RecordedFsStore
from testca import TestCa
from upcert import jobs
from upcert.agent import Agent
from upcert.errors import RotationError
from upcert.mqtt import Client
from upcert.x509 import Certificate

J = "$aws/things/dev1/jobs/"
ROTATE = {"operation": "rotate-certificate"}


_rig = rig
_telemetry = telemetry


class _Rot:
    # What the Jobs API functions use of a Rotation.
    jobs = J
    n = 0
    ms = 2000

    def token(self):
        self.n += 1
        return "t-%d" % self.n


def test_jobs_api_topics_and_payloads():
    a, aws, store, lines = _rig()
    cur = Certificate(store.certificate()).cert_id()
    aws.add_job("j1", {"operation": "reboot"})
    a.cycle()
    eq(
        aws.events[2:5],
        [
            ("sub", J + "notify-next"),
            ("sub", J + "start-next/accepted"),
            ("sub", J + "start-next/rejected"),
        ],
        "subscribed first, after the commands topic",
    )
    eq(aws.events[5][1], J + "start-next", "topic")
    eq(
        json.loads(aws.events[5][2]),
        {"statusDetails": {"oldCertificateId": cur}, "clientToken": "upcert-1"},
        "payload",
    )
    j = aws.job("j1")
    eq((j["status"], j["version"]), ("REJECTED", 3), "started, then rejected")
    upd = [e for e in aws.events if e[0] == "pub" and e[1] == J + "j1/update"][0]
    eq(
        json.loads(upd[2]),
        {
            "status": "REJECTED",
            "statusDetails": {
                "reason": "unknown operation 'reboot': this device runs 'rotate-certificate'"
            },
            "expectedVersion": 2,
            "clientToken": "upcert-2",
        },
        "update",
    )
    c = Client("dev1")
    c.connect(aws.socket())
    rot = _Rot()
    raises(
        RotationError,
        jobs.update,
        rot,
        c,
        "j1",
        2,
        "FAILED",
        {},
        contains=("jobs j1/update rejected: VersionMismatch: expected 3"),
    )


def test_start_next_rejected_is_logged():
    a, aws, store, lines = _rig()
    aws.reject_jobs = ("InvalidRequest", "no")
    a.run(max_cycles=1)
    true("upcert: jobs: jobs start-next rejected: InvalidRequest: no" in lines, repr(lines))
    eq(len(_telemetry(aws)), 1, "telemetry goes on")


def test_first_telemetry_without_a_jobs_service():
    # A broker without the Jobs service never answers start-next: the first telemetry must
    # not wait for it, and the agent gives up quietly (once) after fleet.timeout_s.
    from time import sleep_ms, ticks_diff, ticks_ms

    a, aws, store, lines = _rig(interval_s=2, fleet={"timeout_s": 1})
    aws.no_jobs = True
    a.sleep_ms = sleep_ms
    t0 = ticks_ms()
    a.cycle()  # connect, report, serve the link for 2 s
    t = _telemetry(aws)
    eq(len(t), 1, "telemetry published")
    i = lines.index("upcert: published telemetry seq=1")
    true(ticks_diff(ticks_ms(), t0) >= 2000, "then served the link")
    gave_up = [n for n, line in enumerate(lines) if "no reply to start-next" in line]
    eq(len(gave_up), 1, "gave up once: %r" % lines)
    true(gave_up[0] > i, "after the telemetry")
    eq(
        lines[gave_up[0]],
        "upcert: jobs: no reply to start-next in 1000 ms: asking again after the next connect"
        " or job event",
        "line",
    )
    n = len(aws.published(J + "start-next"))
    aws.add_job("j9", ROTATE)
    aws.sock.feed(aws.notify())  # notify-next names a job: ask again
    a.sleep_ms = lambda ms: None
    a.config["telemetry_interval_s"] = 0
    a.cycle()
    eq(len(aws.published(J + "start-next")), n + 1, "asked again after notify-next")


def test_notify_next_event():
    a, aws, store, lines = _rig()
    rot = a.rot
    eq(rot.on_message(b"things/dev1/commands", b"{}"), False, "not ours before attach")
    a.cycle()
    eq(aws.events[2], ("sub", J + "notify-next"), "subscribed after the commands topic")
    eq(rot.jobs_pending, False, "start-next asked at connect")
    eq(rot.on_message(b"things/dev1/commands", b"{}"), False, "not ours")
    eq(
        rot.on_message((J + "notify-next").encode(), b'{"timestamp": 1, "execution": {}}'),
        True,
        "ours",
    )
    eq((rot.jobs_pending, rot.pending()), (True, True), "a job waits")
    rot.on_message((J + "notify-next").encode(), b'{"timestamp": 2}')
    eq(rot.jobs_pending, False, "no execution: nothing pending")


def test_job_at_connect_rotates_and_reconnects():
    a, aws, store, lines = _rig()
    old_id = Certificate(store.certificate()).cert_id()
    aws.add_job("j1", ROTATE)
    a.run(max_cycles=2)
    new_id = Certificate(store.certificate()).cert_id()
    true(new_id != old_id, "new identity")
    j = aws.job("j1")
    eq(
        (j["status"], j["details"]),
        ("SUCCEEDED", {"oldCertificateId": old_id, "newCertificateId": new_id}),
        "job reported",
    )
    true("upcert: job j1: rotate-certificate" in lines, "job line")
    i = [n for n, line in enumerate(lines) if line.startswith("upcert: rotation: done")][0]
    true(lines[i].startswith("upcert: rotation: done: certificate %s" % new_id[:16]), lines[i])
    # The trial connection stays as the link: no reconnection.
    true(lines[i + 1].startswith("upcert: connected TLS 1.2 "), lines[i + 1])
    true(("cert %s" % new_id[:16]) in lines[i + 1], lines[i + 1])
    # Success is reported over the new identity once its telemetry got through (proven).
    eq(lines[i + 2], "upcert: published telemetry seq=2", "telemetry first")
    eq(lines[i + 3], "upcert: job j1 SUCCEEDED", "succeeded line")
    t = _telemetry(aws)
    eq(len(t), 2, "telemetry did not wait for the job")
    eq((t[0]["cert_id"], t[0]["rotation"]), (old_id, "idle"), "telemetry before")
    eq((t[1]["cert_id"], t[1]["rotation"]), (new_id, "done"), "telemetry after")
    true(t[1]["renew_due"].startswith("20"), "renew_due %r" % t[1]["renew_due"])


class _NoRoom:
    # jobs.py as a full heap would run it: serve() out of memory.
    def serve(self, *a):
        raise MemoryError("memory allocation failed, allocating 272 bytes")


def test_job_reply_out_of_memory_asks_again_later():
    # start-next has put the job IN_PROGRESS at AWS; a reply the device could not handle for
    # lack of RAM is asked for again after a hold, and the job then runs.
    import sys

    import upcert

    a, aws, store, lines = _rig()
    rot = a.rot
    aws.add_job("j1", ROTATE)
    sys.modules["upcert.jobs"] = upcert.jobs = _NoRoom()
    try:
        a.cycle()
    finally:
        sys.modules.pop("upcert.jobs", None)  # the rotation drops it after use anyway
        upcert.__dict__.pop("jobs", None)
    true("upcert: jobs: memory allocation failed, allocating 272 bytes" in lines, lines)
    true("upcert: jobs: asking for the job again in 30 s" in lines, lines)
    eq((rot.jobs_pending, rot.pending()), (True, False), "held: not asked again at once")
    eq(aws.job("j1")["status"], "IN_PROGRESS", "AWS has started it")
    a.rot.clock.t += 31
    true(rot.pending(), "asked again once the hold is over")
    a.run(max_cycles=3)
    true("upcert: job j1: rotate-certificate" in lines, lines)
    eq(aws.job("j1")["status"], "SUCCEEDED", "the job ran")


def test_notify_next_while_serving():
    a, aws, store, lines = _rig(interval_s=1)
    fed = []

    def sleep(ms):
        if not fed:
            fed.append(1)
            aws.add_job("j2", ROTATE)
            aws.sock.feed(aws.notify())

    a.sleep_ms = sleep
    a.run(max_cycles=1)
    eq(aws.job("j2")["status"], "IN_PROGRESS", "rotated during the report period")
    eq(a.rot.state, "done", "committed")
    a.run(max_cycles=1)
    eq(aws.job("j2")["status"], "SUCCEEDED", "reported by the new identity")
    t = _telemetry(aws)
    eq((t[0]["rotation"], t[0]["renew_due"] is not None), ("idle", True), "telemetry before")


def test_rotate_command():
    a, aws, store, lines = _rig()
    old = store.certificate()
    a.cycle()  # connect + report
    aws.sock.feed(publish_packet("things/dev1/commands", b'{"cmd": "rotate", "id": 5}'))
    a.cycle()
    reply = json.loads(aws.published("things/dev1/replies")[0][1])
    eq(reply, {"id": 5, "cmd": "rotate", "ok": True}, "reply")
    true("upcert: command rotate id=5 answered" in lines, "answered line")
    true(
        any(x.startswith("upcert: rotation: start (command; ") for x in lines),
        "rotation started by the command",
    )
    true(store.certificate() != old and a.connected, "rotated, connected with it")


def test_rotate_command_without_rotation_support():
    a = Agent(config(), FakeStore(), FakeClock(), None, print)
    eq(a.answer(b'{"cmd": "rotate", "id": 1}')["error"], "unknown command 'rotate'", "refused")


def test_rotation_off_for_lack_of_memory():
    aws = FakeAws(TestCa(), FakeClock())
    a = Agent(config(), FakeStore(), FakeClock(), aws.socket, [].append, False)
    a.sleep_ms = lambda ms: None
    a.config["telemetry_interval_s"] = 0
    a.run(max_cycles=1)
    t = _telemetry(aws)[0]
    eq((t["rotation"], "renew_due" in t), ("off", False), "telemetry says off")
    eq(a.answer(b'{"cmd": "rotate"}')["ok"], False, "no rotate command")


def test_unknown_operation_rejected():
    a, aws, store, lines = _rig()
    aws.add_job("j3", {"operation": "reboot"})
    a.run(max_cycles=1)
    why = "unknown operation 'reboot': this device runs 'rotate-certificate'"
    eq((aws.job("j3")["status"], aws.job("j3")["details"]), ("REJECTED", {"reason": why}), "job")
    true("upcert: job j3 REJECTED: " + why in lines, repr(lines))
    aws.add_job("j4", "not an object")
    a.rot.jobs_pending = True
    a.run(max_cycles=1)
    eq(aws.job("j4")["status"], "REJECTED", "a document that is not an object")


def test_lost_report_repeated_after_reboot():
    a, aws, store, lines = _rig()
    cur = Certificate(store.certificate()).cert_id()
    aws.add_job(
        "j5", ROTATE, status="IN_PROGRESS", version=2, details={"oldCertificateId": "0" * 64}
    )  # started under an earlier identity
    a.run(max_cycles=1)
    j = aws.job("j5")
    eq((j["status"], j["details"]["newCertificateId"]), ("SUCCEEDED", cur), "reported")
    eq(aws.issued, [], "no second rotation")


def test_job_failed_after_three_tries():
    a, aws, store, lines = _rig()
    aws.reject = (400, "InvalidCsr", "no")
    aws.add_job("j6", ROTATE)
    for _ in range(3):
        a.run(max_cycles=1)
        a.clock.t += 10000
    j = aws.job("j6")
    eq(j["status"], "FAILED", "given up")
    eq(j["details"]["step"], "issue", "step")
    true(j["details"]["reason"].startswith("CreateCertificateFromCsr rejected: 400"), "reason")
    eq(store.calls, [], "nothing staged")


def test_app_wires_rotation_for_slot_stores():
    import os

    from certdata import EC_DER
    from upcert import agent, app, tlsconn

    d = os.getenv("UPCERT_TEST_TMP", "/tmp") + "/appwire"
    try:
        os.mkdir(d)
    except OSError:
        pass
    with open(d + "/config.json", "w") as f:
        f.write('{"thing": "dev1", "endpoint": "localhost"}')
    with open(d + "/roots.der", "wb") as f:
        f.write(EC_DER)
    got = []

    class Board:
        NAME = "fake"

        def __init__(self, store):
            self.s = store

        def network_up(self, cfg, timeout_ms=20000):
            pass

        def clock(self):
            return FakeClock()

        def store(self, cfg):
            return self.s

    class Recorder:
        def __init__(self, config, store, clock, connect, log, rotation=None, room=None,
                     net=None):
            got.append(rotation)
            got.append(room())

        def run(self):
            pass

    real = tlsconn.make_context, agent.Agent
    tlsconn.make_context = lambda c, k, r, room=None: None
    agent.Agent = Recorder
    try:
        app.main(Board(RecordedFsStore(EC_DER, b"k")), d + "/config.json", print, lambda ms: None)
        app.main(Board(FakeStore()), d + "/config.json", print, lambda ms: None)
    finally:
        tlsconn.make_context, agent.Agent = real
    eq(type(got[0]).__name__, "Rotation", "slot store: rotation on")
    true(type(got[1]) is int and got[1] > 0, "the board's heap figure reaches the agent")
    eq(got[2], None, "no slots: no rotation")
