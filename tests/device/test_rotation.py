# Device tests for upcert.rotation: the state machine on fakes with real P-256 keys and real
# certificates (testca): happy path order (stage before trial, commit after), the checks that
# refuse a certificate, trial failure -> discard, rejection -> backoff, link loss, no key leaks.
import sys
from binascii import b2a_base64, hexlify

from agentfakes import DAY, NOW, FakeClock, config
from checks import eq, raises, true
from fakeaws import FakeAws
from slotstore import RecordedFsStore
from testca import SHA1_RSA, TestCa, key
from upcert import config as config_mod
from upcert.mqtt import Client
from upcert.rotation import Rotation
from upcert.x509 import Certificate

P = "upcert: rotation: "


class Rig:
    """A connected Rotation over FakeAws; the device certificate has 20 days left (due)."""

    def __init__(self, left_days=20, roots=True, **over):
        self.clock = FakeClock()
        self.ca = TestCa()
        self.aws = FakeAws(self.ca, self.clock)
        self.calls = []
        k = key("old-device")
        self.old = self.ca.issue("dev1", k.public_point(), NOW - 300 * DAY, NOW + left_days * DAY)
        self.store = RecordedFsStore(self.old, k.private_der(), self.calls)
        self.lines = []
        self.cfg = config_mod.validate(config(**over))
        anchors = (lambda: [self.ca.cert()]) if roots is True else roots
        self.rot = Rotation(
            self.cfg,
            self.store,
            self.clock,
            self.aws.connector(self.calls),
            self.lines.append,
            anchors,
        )
        self.client = Client("dev1")
        self.client.connect(self.aws.socket())
        self.rot.attach(self.client)
        self.rot.jobs_pending = False  # no start-next here: test_jobs.py covers jobs
        self.aws.events = []

    def service(self):
        return self.rot.service(self.client, Certificate(self.store.certificate()))

    def rotation_lines(self):
        return [line[len(P) :] for line in self.lines if line.startswith(P)]

    def failed(self, step, text, lo=60):
        eq(self.rot.state, "failed:" + step, "state")
        line = self.lines[-1]
        true(line.startswith(P + "failed at %s: %s" % (step, text)) and "; retry in " in line, line)
        s = int(line.rsplit(" ", 2)[1])
        true(lo <= s <= lo * 5 // 4, "backoff %d s" % s)
        return s


def test_happy_path_order_and_log_lines():
    r = Rig()
    old = Certificate(r.old)
    eq(r.rot.state, "idle", "before")
    eq(r.service(), "new", "committed: the agent must reconnect")
    eq(r.calls, ["stage", "tls", "commit"], "stage, then trial connection, then commit")
    new = Certificate(r.store.certificate())
    nid = new.cert_id()
    eq(r.store.describe()["slot"], "B", "flipped to the other slot")
    eq(new.der, r.aws.issued[0], "the certificate AWS issued")
    eq(r.aws.certs[nid], "ACTIVE", "activated by RegisterThing")
    got = r.rotation_lines()
    true(got[0].startswith("due: expires in 20 days (renewal window 64 days)"), got[0])
    true(got[1].startswith("start (expires in 20 days"), got[1])
    eq(got[2], "new P-256 key", "key")
    true(got[3].startswith("CSR for CN=dev1 (") and got[3].endswith(" bytes)"), got[3])
    eq(
        got[4:],
        [
            "certificate %s issued" % nid[:16],
            "checks passed: issuer 'upcert test CA' signature verified",
            "staged",  # before RegisterThing activates it (a power cut then finds it staged)
            "RegisterThing(upcert-rotation) accepted",
            "trial connection as dev1 accepted",
            "committed certificate %s" % nid[:16],
            "done: certificate %s expires %s"
            % (nid[:16], r.clock.iso(new.not_after)),
        ],
        "steps",
    )
    for m in ("rotate", "jobs", "fleet", "csr", "p256", "derw"):
        true("upcert." + m not in sys.modules, "upcert.%s still loaded" % m)
    kinds = [e[0] + ":" + (e[1] if len(e) > 1 else "") for e in r.aws.events]
    # One TLS connection at a time: the link closes (DISCONNECT), then the trial connects with
    # the new identity under the same client id, and stays.
    i = kinds.index("disconnect:")
    eq(kinds[i + 1 :], ["connect:dev1"], "trial after the old link closed, under our own id")
    eq([k for k in kinds if k.startswith("connect:")], ["connect:dev1"], "no second client id")
    eq(r.rot.state, "done", "state")
    true(new.not_after > old.not_after, "outlives the old one")
    # The private key never leaves: not in the log, not in any payload.
    kder = r.store.private_key()
    for secret in (kder, hexlify(kder), b2a_base64(kder).strip()):
        for line in r.lines:
            true(secret[20:60] not in line.encode(), "key material in the log")
        for _, payload in r.aws.published():
            true(secret[20:60] not in payload, "key material published")


def test_not_due_does_nothing():
    r = Rig(left_days=200)
    eq(r.service(), False, "not due")
    eq((r.rot.state, r.calls, r.aws.events), ("idle", [], []), "nothing sent")
    true(r.rot.due_iso().startswith("2027-"), r.rot.due_iso())


def test_untrusted_clock_never_rotates():
    r = Rig(left_days=2)
    r.clock.ok = False
    eq(r.service(), False, "untrusted")
    eq((r.rot.state, r.rot.due_iso(), r.aws.events), ("idle", None, []), "nothing")


def test_wrong_key_in_certificate_refused():
    r = Rig()
    r.aws.wrong_key = key("someone else").public_point()
    eq(r.service(), False, "refused")
    r.failed("check", "issued certificate is not for our new key")
    eq(r.calls, [], "nothing staged")
    eq(r.store.certificate(), r.old, "old identity kept")


def test_trial_failure_discards():
    r = Rig(fleet={"template": None})  # no RegisterThing: the certificate stays inactive
    eq(r.service(), "lost", "trial refused: the link was closed for it")
    eq(r.calls, ["stage", "tls", "discard"], "staged, tried, discarded")
    r.failed("trial", "localhost:8883 closed the connection in the TLS handshake")
    eq((r.store.certificate(), r.store.staged()), (r.old, None), "old identity kept")


def test_checks_run_without_the_certificate_reader():
    # issued.py reads the certificate, vet.py checks what it read: the reader (certlean, ~6 KB
    # as loaded on 32-bit) and the checks' code are never in RAM together (that step sets the
    # rotation's peak heap). The clock is asked for the trusted time as the checks begin.
    r = Rig()
    seen = []
    real = r.clock.require_trusted

    def require_trusted():
        if "upcert.vet" in sys.modules:
            seen.append([m for m in ("certlean", "issued") if "upcert." + m in sys.modules])
        return real()

    r.clock.require_trusted = require_trusted
    eq(r.service(), "new", "rotated")
    eq(seen, [[]], "the reader gone while the checks ran")
    has = [line for line in r.rotation_lines() if line.startswith("checks passed")]
    true(has and "signature verified" in has[0], has)


def test_rejection_backs_off_then_succeeds():
    r = Rig()
    r.aws.reject = (400, "InvalidCsr", "bad CSR")
    eq(r.service(), False, "rejected")
    first = r.failed("issue", "CreateCertificateFromCsr rejected: 400 InvalidCsr: bad CSR")
    eq("upcert.diagnose" in sys.modules, False, "the diagnosis's code dropped after use")
    n = len(r.aws.events)
    r.clock.t += first - 1
    eq(r.service(), False, "still backing off")
    eq(len(r.aws.events), n, "no request while backing off")
    r.clock.t += 1
    eq(r.service(), False, "second failure")
    r.failed("issue", "CreateCertificateFromCsr rejected", lo=120)
    r.aws.reject = None
    r.clock.t += 200
    eq(r.service(), "new", "third try works")
    eq((r.rot.state, r.rot._backoff_s), ("done", 0), "backoff reset")


def test_timeout_backs_off():
    r = Rig(fleet={"timeout_s": 1})
    r.aws.silent = True
    eq(r.service(), False, "no reply")
    r.failed("issue", "no reply to $aws/certificates/create-from-csr/json in 1000 ms")


def test_issuer_signature_must_verify():
    r = Rig(roots=lambda: [TestCa(seed="impostor").cert()])  # same CN, another key
    eq(r.service(), False, "refused")
    r.failed("check", "issuer 'upcert test CA' signature does not verify")


def test_issuer_not_on_device():
    r = Rig(roots=None)
    eq(r.service(), "new", "same issuer as before: accepted")
    true(
        "checks passed: issuer 'upcert test CA' as before; signature not verified on device"
        in r.rotation_lines(),
        repr(r.rotation_lines()),
    )
    r = Rig(roots=None)
    r.aws.ca = TestCa("Other CA", "other")
    eq(r.service(), False, "foreign issuer")
    r.failed("check", "issuer 'Other CA' is neither 'upcert test CA' nor a trust anchor")


def test_signature_algorithm_and_validity_checks():
    r = Rig()
    r.aws.alg = SHA1_RSA
    eq(r.service(), False, "sha1WithRSA")
    r.failed("check", "issued certificate signed 1.2.840.113549.1.1.5: AWS IoT refuses it")
    r = Rig()
    r.aws.validity_s = 10 * DAY  # the current one has 20 days left
    eq(r.service(), False, "shorter")
    r.failed("check", "issued certificate expires 2027-01-25T08:00:00Z, before the current one")


def test_link_lost_during_request_propagates():
    r = Rig()
    r.aws.sock.closed = True  # writes raise OSError(EBADF)
    raises(OSError, r.service)
    eq(r.rot.state, "failed:issue", "state")
    true(r.lines[-1].startswith(P + "failed at issue: "), r.lines[-1])


def test_store_failure_at_stage():
    r = Rig()
    r.store.fail = "stage"
    eq(r.service(), False, "stage failed")
    r.failed("stage", "stage failed (test)")
    eq(r.calls, ["stage"], "no trial, no commit")


def test_subject_fields_from_config():
    r = Rig(fleet={"subject": [["O", "Acme"], ["C", "DE"]]})
    eq(r.service(), "new", "rotated")
    s = r.aws.subjects[0]
    true(b"dev1" in s and b"Acme" in s and b"DE" in s, repr(s))


def test_command_gives_up_after_three_tries():
    r = Rig(left_days=200)  # not due: only the request drives it
    r.aws.reject = (503, "ServiceUnavailable", "later")
    r.rot.request("command")
    for i in range(3):
        true(r.rot.pending(), "pending %d" % i)
        eq(r.service(), False, "fails")
        r.clock.t += 100000
    eq(r.lines[-1], P + "command given up after 3 tries", "gave up")
    eq((r.rot.want, bool(r.rot.pending())), (None, False), "no more tries")


class _NoRoom:
    # A module stand-in whose every function runs out of memory (p256.generate, csr.request_info).
    def __getattr__(self, name):
        def f(*a, **k):
            raise MemoryError("no room (test)")

        return f


def _out_of_memory_at(r, step):
    # Make one step of the rotation raise MemoryError, as a full heap would; returns undo().
    import upcert

    if step in ("key", "csr"):
        name = {"key": "p256", "csr": "csr"}[step]
        m = _NoRoom()
        sys.modules["upcert." + name] = m
        setattr(upcert, name, m)
        return lambda: None  # the rotation drops it after use: the real module loads again
    if step in ("issue", "register"):
        want = "create-from-csr" if step == "issue" else "provisioning-templates"
        c = r.client

        def publish(topic, msg, *a, **k):
            if want in topic:
                raise MemoryError()
            return Client.publish(c, topic, msg, *a, **k)

        c.publish = publish
        return lambda: delattr(c, "publish")
    if step == "check":  # the trust anchors are read at the key step, the time here

        def require_trusted():
            raise MemoryError()

        r.clock.require_trusted = require_trusted
        return lambda: delattr(r.clock, "require_trusted")
    if step in ("stage", "commit"):
        r.store.fail, r.store.exc = step, MemoryError
        return lambda: setattr(r.store, "fail", None)
    conn = r.rot.connector  # trial

    def connector(cert, key, roots=None):
        raise MemoryError()

    r.rot.connector = connector
    return lambda: setattr(r.rot, "connector", conn)


def test_out_of_memory_at_every_step_keeps_the_old_identity_then_rotates():
    # Each step that allocates survives MemoryError: state failed:memory, the staged pair
    # discarded, a job reported FAILED at the next service (step "memory", the step in the
    # reason), a backoff; then, with room again and the backoff over, the due rotation commits.
    for step in ("key", "csr", "issue", "check", "register", "stage", "trial", "commit"):
        r = Rig()
        r.aws.add_job("j-" + step, {"operation": "rotate-certificate"}, status="IN_PROGRESS")
        r.rot.job = ("j-" + step, 1)
        r.rot.request("job j-" + step)
        undo = _out_of_memory_at(r, step)
        lost = step in ("trial", "commit")  # the link was closed for the trial
        eq(r.service(), "lost" if lost else False, step + ": failed")
        if lost:
            r.client.connect(r.aws.socket())  # as the agent does: reconnect, old identity
        eq(r.rot.state, "failed:memory", step + ": state")
        line = [x for x in r.lines if x.startswith(P + "failed at memory: ")]
        true(line and ("out of memory at %s (" % step) in line[0], "%s: %r" % (step, r.lines))
        eq((r.store.certificate(), r.store.staged()), (r.old, None), step + ": old identity kept")
        staged = "stage" in r.calls and step != "stage"
        eq("discard" in r.calls, staged, step + ": staged pair discarded (key erased)")
        eq(r.aws.job("j-" + step)["status"], "IN_PROGRESS", step + ": reported once the work is gone")
        eq(r.service(), False, step + ": backing off")
        j = r.aws.job("j-" + step)
        eq((j["status"], j["details"]["step"]), ("FAILED", "memory"), step + ": job")
        true(j["details"]["reason"].startswith("out of memory at " + step), j["details"])
        undo()
        r.clock.t += 3600
        eq(r.service(), "new", step + ": with room again, the due rotation commits")
        eq(r.rot.state, "done", step + ": done")


def test_job_report_out_of_memory_stays_owed():
    r = Rig(left_days=200)
    r.aws.add_job("j9", {"operation": "rotate-certificate"}, status="IN_PROGRESS")
    r.rot.job = ("j9", 1)
    r.rot.final = ("FAILED", {"step": "issue", "reason": "test"})
    c = r.client

    def publish(topic, msg, *a, **k):
        raise MemoryError()

    c.publish = publish
    r.service()
    eq((r.aws.job("j9")["status"], r.rot.job), ("IN_PROGRESS", ("j9", 1)), "still owed")
    true(r.lines[-1] == "upcert: job j9 FAILED not reported yet: out of memory", r.lines[-1])
    delattr(c, "publish")
    r.service()
    eq(r.aws.job("j9")["status"], "IN_PROGRESS", "held back for a while")
    r.clock.t += 30
    true(r.rot.pending(), "due again")
    r.service()
    eq((r.aws.job("j9")["status"], r.rot.job), ("FAILED", None), "reported")


def test_failed_rotation_reports_its_certificate_for_retirement():
    # The trial is refused (no RegisterThing: the issued certificate is not ACTIVE); the
    # certificate AWS issued must not stay usable: it is reported on things/<thing>/rotation at
    # the next service, and a job given up carries it in its statusDetails.
    import hashlib
    import json
    from binascii import hexlify

    r = Rig(fleet={"template": None})
    r.aws.add_job("j7", {"operation": "rotate-certificate"}, status="IN_PROGRESS")
    r.rot.job = ("j7", 1)
    r.rot.request("job j7")
    r.rot.tries = 2  # the third failure gives the job up
    eq(r.service(), "lost", "trial refused")
    cid = hexlify(hashlib.sha256(r.aws.issued[0]).digest()).decode()
    eq(r.aws.published("things/dev1/rotation"), [], "not while the link is down")
    r.client.connect(r.aws.socket())  # the agent reconnects with the old identity
    r.service()
    got = [json.loads(p) for t, p in r.aws.published("things/dev1/rotation")]
    eq(got, [{"event": "rotation-abandoned", "certificateId": cid, "step": "trial"}], "reported")
    true(P + "certificate %s (failed at trial) reported for retirement" % cid[:16] in r.lines,
         repr(r.lines[-3:]))
    j = r.aws.job("j7")
    eq((j["status"], j["details"].get("abandonedCertificateId")), ("FAILED", cid), "job")
    r.service()
    eq(len(r.aws.published("things/dev1/rotation")), 1, "reported once")


def test_rotation_without_a_job_reports_the_old_certificate_for_retirement():
    # An expiry rotation has no job to report SUCCEEDED to: once the new identity is proven
    # (its first telemetry acknowledged), the event on things/<thing>/rotation names the old and
    # the new certificate, so the cloud sets the old one INACTIVE; not before, and once.
    import json

    r = Rig()
    eq(r.service(), "new", "rotated")
    ids = dict(r.rot.final[1])
    r.service()
    eq(r.aws.published("things/dev1/rotation"), [], "not before the new identity is proven")
    r.rot.proven()
    r.service()
    got = [json.loads(p) for t, p in r.aws.published("things/dev1/rotation")]
    eq(got, [dict(ids, event="rotation-done")], "reported")
    eq(len(ids["oldCertificateId"]) == len(ids["newCertificateId"]) == 64, True, "ids")
    r.service()
    eq(len(r.aws.published("things/dev1/rotation")), 1, "once")


def test_out_of_memory_while_saying_why_still_backs_off_and_reports():
    # At the edge of the heap the failure's own line may not fit either (its text needs RAM):
    # the state, the backoff and the job's report must not hang on it, else the rotation would
    # start again at once, and again, each time over the broker.
    r = Rig()
    r.aws.add_job("j-edge", {"operation": "rotate-certificate"}, status="IN_PROGRESS")
    r.rot.job = ("j-edge", 1)
    r.rot.request("job j-edge")
    undo = _out_of_memory_at(r, "csr")
    room = r.rot.room

    def no_room():
        raise MemoryError()  # no line with a figure fits: neither the start nor the failure

    r.rot.room = no_room
    eq(r.service(), False, "failed inside service(), nothing raised out of it")
    eq(r.rot.state, "failed:memory", "state")
    line = [x for x in r.lines if x.startswith(P + "failed at ")][-1]
    true(line.startswith(P + "failed at memory: out of memory; retry in "), line)
    s = int(line.rsplit(" ", 2)[1])
    true(60 <= s <= 75, "backoff %d s" % s)
    n = len(r.lines)
    eq(r.service(), False, "backing off")
    eq(len(r.lines), n + 1, "no second start, only the job's report: %r" % r.lines[n:])
    j = r.aws.job("j-edge")
    eq((j["status"], j["details"]["step"], j["details"]["reason"]),
       ("FAILED", "memory", "out of memory"), "job reported")
    eq((r.store.certificate(), r.store.staged()), (r.old, None), "old identity kept")
    undo()
    r.rot.room = room
    r.clock.t += 3600
    eq(r.service(), "new", "with room again, the due rotation commits")
