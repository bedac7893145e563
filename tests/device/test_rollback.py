# Device tests for what follows a commit: the new identity refused by the broker three times in
# a row rolls the store back (job FAILED, state failed:reconnect, backoff); clock and network
# failures never count; a pair staged before a reboot is discarded at start-up. FakeAws plays
# AWS IoT (its connector refuses a certificate that is not ACTIVE, as the broker's TLS does).
import errno

from agentrig import rig, telemetry
from checks import eq, true
from upcert import diagnose
from upcert.errors import (
    CLOSED,
    PROTOCOL,
    REFUSED,
    TIMEOUT,
    ClockNotSetError,
    ConnectError,
    MqttError,
)
from upcert.x509 import Certificate

ROTATE = {"operation": "rotate-certificate"}
P = "upcert: rotation: "


def _committed(job=True):
    # A rotation (by job, or by command) committed; the agent is about to reconnect.
    a, aws, store, lines = rig()
    old = Certificate(store.certificate()).cert_id()
    if job:
        aws.add_job("j1", ROTATE)
    else:
        a.rot.request("command")
    a.run(max_cycles=1)
    new = Certificate(store.certificate()).cert_id()
    true(new != old and a.rot.state == "done" and not a.connected, "committed")
    if job:
        eq(aws.job("j1")["status"], "IN_PROGRESS", "success not reported yet")
    return a, aws, store, lines, old, new


def test_refused_three_times_rolls_back_and_fails_the_job():
    a, aws, store, lines, old, new = _committed()
    aws.certs[new] = "INACTIVE"  # deactivated between the commit and the reconnect
    a.sleeps.clear()
    a.run(max_cycles=2)
    eq(store.calls.count("rollback"), 0, "two refusals: not yet")
    a.run(max_cycles=1)
    eq(store.calls.count("rollback"), 1, "third refusal: rolled back")
    eq(Certificate(store.certificate()).cert_id(), old, "old identity back in the store")
    rb = [line for line in lines if "rolled back" in line]
    eq(len(rb), 1, "one rollback line")
    true(
        rb[0].startswith(P + "new identity refused by the broker (localhost:8883 closed the")
        and rb[0].endswith("); rolled back to %s" % old[:16]),
        rb[0],
    )
    i = lines.index(rb[0])
    true(lines[i + 1].startswith(P + "failed at reconnect: new identity refused; retry in "), lines[i + 1])
    true(lines[i + 2].startswith("upcert: connection failed: "), lines[i + 2])
    eq(a.rot.state, "failed:reconnect", "state")
    eq(len(a.sleeps), 3, "the agent's backoff between tries")
    true(1000 <= a.sleeps[0] < 2000 and 2000 <= a.sleeps[1] < 3000, repr(a.sleeps))
    a.run(max_cycles=1)  # connects with the old identity, reports the job
    j = aws.job("j1")
    eq((j["status"], j["details"]["step"]), ("FAILED", "reconnect"), "job FAILED")
    true("upcert: job j1 FAILED" in lines, "job line")
    t = telemetry(aws)[-1]
    eq((t["cert_id"], t["rotation"]), (old, "failed:reconnect"), "telemetry")
    n = len(aws.issued)
    a.run(max_cycles=2)
    eq(len(aws.issued), n, "backing off: no new rotation at once")


def test_one_refusal_then_accepted_keeps_the_new_identity():
    a, aws, store, lines, old, new = _committed()
    aws.certs[new] = "INACTIVE"
    a.run(max_cycles=2)
    aws.certs[new] = "ACTIVE"
    a.run(max_cycles=1)
    eq((store.calls.count("rollback"), a.rot.refusals), (0, 0), "no rollback, count reset")
    j = aws.job("j1")
    eq((j["status"], j["details"]["newCertificateId"]), ("SUCCEEDED", new), "reported")
    eq(telemetry(aws)[-1]["cert_id"], new, "telemetry with the new identity")
    aws.certs[new] = "INACTIVE"  # later refusals are not the rotation's business
    a.connected = False
    a.run(max_cycles=4)
    eq(store.calls.count("rollback"), 0, "never after the new identity connected")


def test_clock_and_network_failures_never_roll_back():
    a, aws, store, lines, old, new = _committed(job=False)
    a.clock.ok = a.clock.sync_ok = False
    a.run(max_cycles=4)
    true(all("rolled back" not in line for line in lines), "clock: no rollback")
    eq(len([line for line in lines if line.startswith("upcert: clock not set")]), 4, "clock")
    a.clock.ok = a.clock.sync_ok = True
    good = a.connect

    def unreachable(host, port):
        raise diagnose.connect_error(OSError(errno.EHOSTUNREACH), host, port)

    a.connect = unreachable
    a.run(max_cycles=4)
    true(all("rolled back" not in line for line in lines), "network: no rollback")
    aws.certs[new] = "INACTIVE"
    a.connect = good
    a.run(max_cycles=2)
    a.connect = unreachable  # does not reset the count either
    a.run(max_cycles=1)
    a.connect = good
    a.run(max_cycles=1)
    eq(store.calls.count("rollback"), 1, "the third refusal rolls back")
    eq(Certificate(store.certificate()).cert_id(), old, "old identity")
    n = len(telemetry(aws))
    a.run(max_cycles=1)
    eq((len(telemetry(aws)), telemetry(aws)[-1]["cert_id"]), (n + 1, old), "reconnected as before")


def test_what_counts_as_a_refusal():
    # Decided on the reason code and the error number, never on the text: a message that says
    # "closed the connection" without the REFUSED code is not a refusal, and the other way round.
    yes = (
        diagnose.connect_error(OSError(errno.ECONNRESET), "x", 1, True),
        diagnose.connect_error(OSError(-0x7780), "x", 1, True),  # TLS fatal alert
        MqttError("worded any way", REFUSED),
        MqttError("the broker closed the connection", CLOSED),
        OSError(-0x7780),
        OSError(errno.ECONNRESET),
    )
    no = (
        ClockNotSetError("clock not set (reads 2000-01-01T00:00:05Z): sync NTP first"),
        diagnose.connect_error(OSError(errno.ECONNREFUSED), "h", 1),
        diagnose.connect_error(OSError(errno.ETIMEDOUT), "h", 1),
        diagnose.connect_error(OSError("[addrinfo error -2]"), "h", 1),
        diagnose.connect_error(ValueError("The certificate is not correctly signed"), "h", 1),
        MqttError(diagnose.connack(3), PROTOCOL),
        MqttError("no CONNACK from the broker in 15 s", TIMEOUT),
        ConnectError("closed the connection: broker rejected our certificate"),  # no code
        MemoryError(),
    )
    for e in yes:
        true(diagnose.refused(e), "refused: %r" % (e,))
    for e in no:
        true(not diagnose.refused(e), "not refused: %r" % (e,))


def test_no_intact_previous_identity():
    a, aws, store, lines, old, new = _committed(job=False)
    store.lose(0)  # the previous pair (slot A) is gone
    aws.certs[new] = "INACTIVE"
    a.run(max_cycles=3)
    true(
        any(x.startswith(P + "rollback failed: ") and x.endswith(
            ": no intact previous identity to roll back to") for x in lines),
        repr(lines[-4:]),
    )
    eq(Certificate(store.certificate()).cert_id(), new, "kept the new identity")


def test_pair_staged_before_a_reboot_is_discarded():
    a, aws, store, lines = rig()
    a.rot.start()
    eq((store.calls, lines), ([], []), "nothing staged: nothing done")
    store.stage(b"\x30\x03new", b"\x30\x03key")
    eq(store.slot_files(1), ["cert-b.der", "key-b.der"], "staged in slot B")
    a.rot.start()
    eq(store.calls[-1], "discard", "discarded")
    eq(lines, [P + "staged pair from before the reboot discarded"], "logged")
    eq((store.staged(), store.slot_files(1)), (None, []), "pair erased")


def test_pair_staged_before_a_reboot_is_reported_for_retirement():
    # A power cut after the stage (RegisterThing may have activated the certificate): the next
    # start-up discards the pair and reports its certificate at the first connect, so the cloud
    # sets it INACTIVE; an ACTIVE certificate nobody holds would be left otherwise.
    import hashlib
    import json
    from binascii import hexlify

    a, aws, store, lines = rig()
    cert = b"\x30\x03new"
    store.stage(cert, b"\x30\x03key")
    a.rot.start()
    cid = hexlify(hashlib.sha256(cert).digest()).decode()
    eq(a.rot.abandoned, [(cid, "reboot")], "queued")
    a.run(max_cycles=1)
    got = [json.loads(p) for t, p in aws.published("things/dev1/rotation")]
    eq(got, [{"event": "rotation-abandoned", "certificateId": cid, "step": "reboot"}], "reported")
    true(P + "certificate %s (failed at reboot) reported for retirement" % cid[:16] in lines,
         repr(lines))
    eq(store.staged(), None, "discarded")


def test_unproven_identity_is_watched_across_a_reboot():
    # Committed, then a reboot before any telemetry with the new identity: the journal says it is
    # on trial, so the restarted agent still rolls back after three refusals; once proven (a
    # telemetry acknowledged) the journal says so and nothing is watched any more.
    from upcert.agent import Agent
    from upcert.rotation import Rotation
    from upcert.store_fs import FsStore

    a, aws, store, lines, old, new = _committed(job=False)
    eq(store.trial(), store.slot_files(0) and _cert_of(store, 0), "journal: on trial")
    # The reboot: a new store object over the same flash, a new Rotation and Agent.
    again = FsStore(store.root)
    lines2 = []
    rot = Rotation(a.config, again, a.clock, aws.connector([]), lines2.append, a.rot.roots)
    rot.start()
    true(lines2 and lines2[-1] == P + "identity committed before the reboot not proven yet: "
         "rollback to %s if the broker refuses it" % old[:16], repr(lines2))
    aws.certs[new] = "INACTIVE"
    b = Agent(a.config, again, a.clock, aws.connector([])(again.certificate(),
              again.private_key()), lines2.append, rot)
    b.sleep_ms = lambda ms: None
    b.run(max_cycles=4)
    eq(Certificate(again.certificate()).cert_id(), old, "rolled back after the reboot")
    true(any(x.startswith(P + "new identity refused by the broker") for x in lines2), repr(lines2))
    eq(again.trial(), None, "no trial after the rollback")


def test_proven_identity_is_not_watched_after_a_reboot():
    a, aws, store, lines, old, new = _committed(job=False)
    a.run(max_cycles=1)  # reconnects with the new identity, telemetry acknowledged: proven
    eq(_trial_after_reboot(store), None, "journal: proven")


def _trial_after_reboot(store):
    from upcert.store_fs import FsStore

    return FsStore(store.root).trial()


def _cert_of(store, slot):
    from upcert.store_fs import FILES

    with open(store.root + "/" + FILES[slot][0], "rb") as f:
        return f.read()
