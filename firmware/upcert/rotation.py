# Certificate rotation, the part that stays in RAM: state, renewal decision, job events, requests
# and backoff. The work (rotate.py, jobs.py, fleet.py, p256, csr) is imported when there is some
# and dropped after it, so it costs RAM only then. Log lines "upcert: rotation: ..." are a contract.
import gc
import random
import sys

from micropython import const

from upcert import diagnose, renew
from upcert.errors import RotationError

# Retries after a failure: 60 s doubling to 1 h, plus up to 25 % jitter (a fleet must not retry
# in step). A job or a command gives up after _TRIES failures (the job is reported FAILED).
_FIRST_S = const(60)
_MAX_S = const(3600)
_TRIES = const(3)
_WORK = ("rotate", "jobs", "fleet", "csr", "p256", "derw")


def drop(names=_WORK):
    """Forget modules until they are needed again: the RAM of .mpy code is freed, though not
    its interned strings (frozen modules cost only their dict). Callers must hold no
    reference to them."""
    import upcert

    for n in names:
        sys.modules.pop("upcert." + n, None)
        upcert.__dict__.pop(n, None)
    gc.collect()


class Rotation:
    """Rotation(config, store, clock, connector, log, roots=None): the rotation state machine.

    config: validated by upcert.config (thing, client_id, endpoint, port, keepalive_s, renew,
    fleet). store: certificate(), private_key(), stage(cert, key), staged() -> (cert, key) or
    None, commit(), discard(). connector(cert_der, key_der) -> connect(host, port) -> socket-
    like: a fresh TLS context for that pair. roots() -> trust anchors (DER list), where a P-256
    issuer lets the device verify the new certificate's signature. clock: now(), trusted(),
    require_trusted(), iso(t). state: idle, due, in-progress, failed:<step> or done.
    """

    def __init__(self, config, store, clock, connector, log, roots=None):
        self.config = config
        self.store = store
        self.clock = clock
        self.connector = connector
        self.log = log
        self.roots = roots
        self.ms = config["fleet"]["timeout_s"] * 1000  # per AWS request
        self.jobs = "$aws/things/%s/jobs/" % config["thing"]  # Jobs API topics
        self.state = "idle"
        self.due_at = None
        self.want = None  # why a rotation was asked for: "command" or "job <id>"
        self.job = None  # (jobId, versionNumber) of the rotate job being served
        self.jobs_pending = False  # notify-next said a job waits (or we just connected)
        self.n = 0  # clientToken counter of the Jobs API
        self.tries = 0
        self._backoff_s = 0
        self._retry_at = 0
        self._notify = None
        self._next = None  # the trial's connect(): reused after the commit (one context less)

    def attach(self, client):
        """After every connect: subscribe to the thing's notify-next (AWS sends no event for a
        job queued while we were away, so one may be waiting)."""
        t = self.jobs + "notify-next"
        client.subscribe(t, 1)
        self._notify = t.encode()
        self.jobs_pending = True

    def on_message(self, topic, msg):
        """True when the message was ours (notify-next). Inside the MQTT callback: no I/O."""
        if topic != self._notify:
            return False
        # NextJobExecutionChanged {"timestamp", "execution"}; no "execution": nothing pending.
        self.jobs_pending = b'"execution"' in msg
        return True

    def request(self, why):
        """Rotate at the next service(), due or not (the `rotate` command, a job)."""
        self.want = why
        self.tries = 0
        self._retry_at = 0

    def pending(self):
        """True when service() has work now: a job event, or a request whose backoff is over."""
        return self.jobs_pending or (self.want and self.clock.now() >= self._retry_at)

    def due_iso(self):
        """When the renewal window opens (ISO 8601), or None before the first decision."""
        return self.due_at and self.clock.iso(self.due_at)

    def connect_new(self):
        """connect(host, port) for the committed identity (the trial's TLS context)."""
        n, self._next = self._next, None
        return n or self.connector(self.store.certificate(), self.store.private_key())

    def say(self, msg, what="rotation: "):
        """One log line 'upcert: <what><msg>'."""
        self.log("upcert: " + what + msg)

    def service(self, client, cert):
        """Serve job events, take the renewal decision for cert (x509.Certificate, in use),
        rotate when due or asked and not backing off. True when a new identity was committed:
        the caller must reconnect with connect_new(). MqttError/OSError: the link is lost."""
        if self.jobs_pending:
            self.jobs_pending = False
            try:
                from upcert import jobs

                jobs.serve(self, client, cert)
            except (RotationError, MemoryError) as e:
                self.say(str(e) or "out of memory", "jobs: ")
            finally:
                jobs = None
                drop()
        c = self.clock
        now = c.now()
        rand = int(cert.cert_id()[:4], 16) / 65536  # fixed per device and certificate
        due, why, self.due_at = renew.decide(cert, now, self.config["renew"], c.trusted(), rand)
        if due and self.state in ("idle", "done"):
            self.state = "due"
            self.say("due: " + why)
        if not (due or self.want) or now < self._retry_at:
            return False
        k = self._newkey(client, self.want or why)
        if not k:
            return False
        try:
            from upcert import rotate

            return rotate.run(self, client, cert, k)
        except MemoryError as e:
            self.fail(client, "load", e)
            return False
        finally:
            rotate = None
            drop()

    def _newkey(self, client, why):
        # Steps 1-2 before the rest is loaded (p256 and csr are the biggest part): (CSR PEM,
        # key DER, public point), or None after a failure.
        self.state = "in-progress"
        self.say("start (%s)" % why)
        step = "key"
        try:
            from upcert import csr, p256

            key = p256.generate()
            self.say("new P-256 key")
            step = "csr"
            t = self.config["thing"]
            pem = csr.pem(csr.build(key, [("CN", t)] + list(self.config["fleet"]["subject"])))
            self.say("CSR for CN=%s (%d bytes)" % (t, len(pem)))
            return pem, key.private_der(), key.public_point()
        except Exception as e:
            self.fail(client, step, e)
        finally:
            key = csr = p256 = None
            drop()

    def fail(self, client, step, e):
        """Step failed with exception e: log why, set the backoff; a job or a command gives up
        after _TRIES failures (the job is then reported FAILED)."""
        c = self.config
        why = diagnose.explain(e, c["endpoint"], c["port"])
        self.state = "failed:" + step
        d = min(self._backoff_s * 2, _MAX_S) if self._backoff_s else _FIRST_S
        self._backoff_s = d
        d += random.getrandbits(16) % (d // 4 + 1)
        self._retry_at = self.clock.now() + d
        self.say("failed at %s: %s; retry in %d s" % (step, why, d))
        self.tries += 1
        if self.want and self.tries >= _TRIES:
            self.say(self.want + " given up after 3 tries")  # _TRIES
            self.want = None
            from upcert import jobs

            jobs.report(self, client, "FAILED", {"step": step, "reason": why[:200]})
