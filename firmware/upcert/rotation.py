# Certificate rotation, the part that stays in RAM: state, renewal decision, Jobs events and a
# non-blocking start-next, backoff, job reports, rollback when the broker refuses a committed
# identity; the work (newkey, rotate, jobs, fleet, p256, csr; resume at start-up) is loaded
# only meanwhile. Logs "upcert: rotation: ...". A pair staged before a reboot is discarded at
# start-up, key erased, and its certificate reported for retirement: its checks and job were in
# RAM, and a rotation still due starts again. The post-commit watch is in RAM too: after a
# reboot the committed identity stands (jobs.serve() reports the job).
# One TLS connection at a time: the agent's link is closed before the trial connection, which
# then stays as the agent's link under the new identity (an ESP32 has IDF heap for one mbedTLS
# session beside a grown Python heap, not two: ports/esp32/mpconfigport.h).
# Rotation owns its state: the step code (rotate.py) and the Jobs code (jobs.py) return results.
# Memory: every step survives MemoryError (state failed:memory, the staged pair discarded, a job
# reported FAILED, a backoff), so no start-up threshold is needed: an ESP32's heap grows.
import gc
from time import ticks_add, ticks_diff, ticks_ms

from micropython import const

from upcert import backoff, drop, renew
from upcert.errors import MEMORY, MqttError, RotationError

# Retries after a failure: 60 s doubling to 1 h, plus up to 25 % jitter (a fleet must not retry
# in step). A job or a command gives up after _TRIES failures (the job is reported FAILED).
_FIRST_S = const(60)
_MAX_S = const(3600)
_TRIES = const(3)
_HOLD_S = const(30)  # wait before Jobs traffic again (a report, start-next) after out of memory
_NEW = const("new")  # service(): a new identity committed, the client connected with it
_LOST = const("lost")  # service(): the link was closed for a trial that failed
# Refusals in a row of the new identity after a commit before rolling back. Its trial connection
# was accepted moments before, so one refusal may be a blip (a broker restarting, an activation
# not seen everywhere yet); three, with the agent's backoff between them (1 + 2 + 4 s), are not,
# and they keep the device offline only ~10 s before it falls back to the identity that worked.
_REFUSALS = const(3)
# Dropped after use (store_slots: the writing half of the slot stores).
_WORK = ("newkey", "rotate", "issued", "vet", "jobs", "fleet", "csr", "p256", "derw", "certlean",
         "sigalgs", "der", "store_journal")


class Rotation:
    """Rotation(config, store, clock, connector, log, roots=None, room=gc.mem_free): the rotation
    state machine.

    config: validated by upcert.config (thing, client_id, endpoint, port, keepalive_s, renew,
    fleet). store: certificate(), private_key(), stage(cert, key), staged() ->
    (cert, key) or None, commit(), discard(), rollback(). connector(cert_der, key_der,
    roots=None) -> connect(host, port) -> socket-like: a fresh TLS context for that pair. roots()
    -> trust anchors (DER list), where a P-256 issuer lets the device verify the new
    certificate's signature. clock: now(), trusted(), require_trusted(), iso(t). room() -> bytes
    of RAM the device can count on (the board's heap_room). state: idle, due, in-progress,
    failed:<step> (failed:memory after an out-of-memory step) or done.
    """

    def __init__(self, config, store, clock, connector, log, roots=None, room=None):
        self.config = config
        self.store = store
        self.clock = clock
        self.connector = connector
        self.log = log
        self.roots = roots
        self.room = room or gc.mem_free
        self.ms = config["fleet"]["timeout_s"] * 1000  # per AWS request
        self.jobs = "$aws/things/%s/jobs/" % config["thing"]  # Jobs API topics
        self.state = "idle"
        self.due_at = None
        self.want = None  # why a rotation was asked for: "command" or "job <id>"
        self.job = None  # (jobId, versionNumber) of the rotate job being served
        self.final = None  # (status, statusDetails) owed to that job, sent by service()
        self.old = None  # id of the identity before a commit, until the new one is proven
        self.refusals = 0
        self.jobs_pending = False  # notify-next said a job waits (or we just connected)
        self.n = 0  # clientToken counter of the Jobs API (token())
        self.tries = 0
        self._backoff_s = 0
        self._retry_at = 0
        self._topics = ()  # notify-next, start-next/accepted, start-next/rejected (bytes)
        self._ask = None  # (b'"clientToken"', deadline in ticks_ms) of the start-next in flight
        self._reply = None  # (accepted, payload) for it, queued by on_message()
        self._next = None  # (the trial's connect(), new Ident): reused after the commit
        self._hold = 0  # no Jobs traffic before this time (port epoch s): it ran out of memory
        self.abandoned = []  # (certificate id, step) issued for failed rotations, to report

    def start(self):
        """At start-up: discard a pair staged before a reboot (erasing its key), logged, its
        certificate queued for the retirement report (abandoned, step "reboot"); and
        when the active identity was committed but not proven before the reboot, watch it again:
        the broker refusing it rolls back (the store's journal says so). resume.py does it."""
        from upcert import resume

        try:
            self.abandoned, self.old = resume.found(self.store, self.say)
        finally:
            resume = None
            drop("resume", "diagnose", *_WORK)

    def attach(self, client):
        """After every connect: subscribe to notify-next and to start-next's replies (AWS
        sends replies only to subscribers), and ask for the next job at the next service()
        (AWS sends no event for a job queued while we were away)."""
        t = self.jobs
        s = t + "start-next"
        self._topics = t = ((t + "notify-next").encode(), (s + "/accepted").encode(),
                            (s + "/rejected").encode())
        for s in t:
            client.subscribe(s, 1)
        self.jobs_pending = True
        self._ask = self._reply = None
        self.refusals = 0

    def proven(self):
        """The agent's telemetry got through (PUBACK): a new identity has proven itself, no
        rollback any more (also in the store's journal), and its job success is due."""
        if not self.old:
            return
        self.old = None
        try:
            self.store.proven()
        except Exception as e:  # the watch then resumes after a reboot: harmless
            self.say("could not record the new identity as proven: %s" % e)
        drop(*_WORK)

    def on_message(self, topic, msg):
        """True when the message was ours (Jobs events and replies). Inside the MQTT callback:
        no I/O, only queue it for service()."""
        t = self._topics
        if topic not in t:
            return False
        if topic == t[0]:
            # NextJobExecutionChanged {"timestamp", "execution"}; no "execution": nothing pending.
            self.jobs_pending = b'"execution"' in msg
        elif self._ask and not self._reply and self._ask[0] in msg:  # quoted: t-1 is not t-12
            self._reply = (topic == t[1], msg)
        return True

    def request(self, why):
        """Rotate at the next service(), due or not (the `rotate` command, a job)."""
        self.want = why
        self.tries = 0
        self._retry_at = 0

    def pending(self):
        """True when service() has work now: a job event or reply, a start-next to give up on,
        a job report owed, or a request whose backoff is over."""
        a = self._ask
        return bool(
            (self.jobs_pending and not a and self.clock.now() >= self._hold)
            or self._reply
            or (self._owed() and self.clock.now() >= self._hold)
            or self.abandoned
            or (a and ticks_diff(ticks_ms(), a[1]) >= 0)
            or (self.want and self.clock.now() >= self._retry_at)
        )

    def due_iso(self):
        """When the renewal window opens (ISO 8601), or None before the first decision."""
        return self.due_at and self.clock.iso(self.due_at)

    def connect_new(self):
        """(connect(host, port), ident) for the identity now in the store: after a commit the
        trial's TLS context and the new certificate's tlsconn.Ident (the agent needs no
        certificate reader then); after a rollback a new context and None."""
        n, self._next = self._next, None
        return n or (self.connector(self.store.certificate(), self.store.private_key()), None)

    def token(self):
        """A new clientToken for a Jobs request (echoed in its reply; <= 64 chars)."""
        self.n += 1
        return "upcert-%d" % self.n

    def say(self, msg, what="rotation: "):
        """One log line 'upcert: <what><msg>'."""
        self.log("upcert: " + what + msg)

    def service(self, client, cert):
        """Send a job report owed, serve job events (start-next is sent here and its reply
        handled at a later call), take the renewal decision for cert (cert_id(), not_before,
        not_after, issuer_cn: the identity in use), rotate when due or asked and not backing off.
        Returns False (the link as it was), "new" (a new identity committed: client is connected
        with it, its subscriptions to be made; connect_new() for later reconnects) or "lost" (the
        link was closed for a trial that failed: reconnect). MqttError/OSError: the link is lost."""
        if self._owed():
            self._report(client)
        if self.abandoned:
            self._tell(client)
        self._jobs(client, cert)
        c = self.clock
        now = c.now()
        rand = int(cert.cert_id()[:4], 16) / 65536  # fixed per device and certificate
        due, why, self.due_at = renew.decide(cert, now, self.config["renew"], c.trusted(), rand)
        if due and self.state in ("idle", "done"):
            self.state = "due"
            self.say("due: " + why)
        if not (due or self.want) or now < self._retry_at:
            return False
        gc.collect()  # keygen and the CSR want the largest free blocks
        k = self._newkey(client, self.want or why)
        if not k:
            return False
        try:
            from upcert import rotate

            step, r, nxt = rotate.run(self, client, cert, k)
        except MemoryError as e:
            step, r, nxt = "load", e, None
        finally:
            rotate = k = None
            drop(*_WORK)
        if step:
            lost = step in ("trial", "commit")  # the agent's link was closed for the trial
            if nxt:  # the certificate issued for it: reported for retirement (service())
                self.abandoned = (self.abandoned + [(nxt, step)])[-4:]
            self.fail(None if lost else client, step, r, False, nxt)
            if isinstance(r, (MqttError, OSError)) and step in ("issue", "register"):
                raise r  # the agent's own link is gone: it reconnects
            return _LOST if lost else False
        self._next = nxt, r
        nid, na = r.id, r.not_after
        self.state = "done"
        self.want = None
        self._backoff_s = self._retry_at = self.tries = 0
        self.old = cert.cert_id()  # watched by refused() until the new identity is proven
        self.final = ("SUCCEEDED", {"oldCertificateId": self.old, "newCertificateId": nid})
        self.say("done: certificate %s expires %s" % (nid[:16], self.clock.iso(na)))
        return _NEW

    def _owed(self):
        # A job report is due: a failure at once, a success once the new identity is proven
        # (only then may the cloud retire the old one).
        f = self.final
        return f and (f[0] != "SUCCEEDED" or not self.old)

    def _jobs(self, client, cert):
        # StartNextPendingJobExecution without blocking: publish now, act on the reply when
        # on_message() has queued it, give up quietly after self.ms (a broker without the Jobs
        # service never answers; the next connect or notify-next asks again).
        a = self._ask
        if self._reply:
            ok, msg = self._reply
            self._reply = self._ask = None
            j = None
            try:
                from upcert import jobs

                j = jobs.serve(self, client, cert, ok, msg)
            except (RotationError, MemoryError) as e:
                self.say(str(e) or "out of memory", "jobs: ")
                if isinstance(e, MemoryError):
                    # start-next has put the job IN_PROGRESS at AWS, and asking again returns
                    # it: once the heap had time to recover, not now (the rotation that just
                    # failed left it in pieces).
                    self.jobs_pending = True
                    self._hold = self.clock.now() + _HOLD_S
                    self.say("asking for the job again in %d s" % _HOLD_S, "jobs: ")
            finally:
                jobs = msg = None
                drop(*_WORK)
            if j:
                self.job = j
                self.request("job " + j[0])
        elif a and ticks_diff(ticks_ms(), a[1]) >= 0:
            self._ask = None
            self.say("no reply to start-next in %d ms: asking again after the next connect or"
                     " job event" % self.ms, "jobs: ")
        elif self.jobs_pending and not a and self.clock.now() >= self._hold:
            self.jobs_pending = False
            tok = self.token()
            self._ask = (b'"%s"' % tok, ticks_add(ticks_ms(), self.ms))
            # statusDetails is recorded when a QUEUED job starts: a report lost to a reboot can
            # then be repeated by the new identity (jobs.serve).
            client.publish(
                self.jobs + "start-next",
                '{"clientToken":"%s","statusDetails":{"oldCertificateId":"%s"}}'
                % (tok, cert.cert_id()),
            )

    def _newkey(self, client, why):
        # Steps 1-2 (newkey.py) before the rest is loaded (p256 and csr are the biggest part):
        # [CSR PEM, key DER, public point, trust anchors], or None after a failure.
        self.state = "in-progress"
        try:
            from upcert import newkey

            step, k = newkey.make(self, why)
        except MemoryError as e:  # newkey itself did not load
            step, k = "key", e
        finally:
            newkey = None
            drop(*_WORK)
        if not step:
            return k
        self.fail(client, step, k)

    def refused(self, e, why):
        """The agent's connect failed with e (why: its diagnosis). After a commit, until the
        new identity connects: the _REFUSALS-th refusal in a row by the broker (diagnose.refused:
        not a clock or network problem) rolls the store back. Returns connect(host, port) for
        the restored identity, or None."""
        if not self.old:
            return None
        try:
            from upcert import diagnose  # loaded on a failure only, and only meanwhile

            if not diagnose.refused(e):
                return None
            self.refusals += 1
            if self.refusals < _REFUSALS:
                return None
            old, self.old = self.old, None
            try:
                self.store.rollback()
                connect = self.connect_new()[0]
            except Exception as x:  # StoreError (no intact previous pair), MemoryError
                self.say("rollback failed: %s" % diagnose.explain(x))
                return None
        finally:
            diagnose = None
            drop("diagnose")
        self.say("new identity refused by the broker (%s); rolled back to %s" % (why, old[:16]))
        self.final = None
        self.fail(None, "reconnect", "new identity refused", True)
        return connect

    def _tell(self, client):
        # A failed rotation must leave no usable identity behind: each certificate issued for
        # one is reported on things/<thing>/rotation for the cloud to set INACTIVE (the
        # stand-in does; on AWS an IoT rule does, README).
        t = self.config["topics"]["telemetry"].rsplit("/", 1)[0] + "/rotation"
        while self.abandoned:
            cid, step = self.abandoned[0]
            client.publish(t, '{"event":"rotation-abandoned","certificateId":"%s","step":"%s"}'
                           % (cid, step), qos=1)
            self.abandoned.pop(0)
            self.say("certificate %s (failed at %s) reported for retirement" % (cid[:16], step))

    def fail(self, client, step, e, give_up=False, abandoned=None):
        """Step failed with exception e (or a str): log why, set the backoff; a job or a command
        gives up after _TRIES failures or at once (give_up, or out of memory: state
        failed:memory); the job is then reported FAILED (now when client is connected, else at
        the next service()). State, backoff and report do not depend on saying why: at the edge
        of the heap that may run out of memory too (the reason is then "out of memory")."""
        gc.collect()
        mem = isinstance(e, MemoryError) or getattr(e, "reason", None) == MEMORY
        at = step
        if mem:
            step = "memory"
            give_up = True
        # First what must hold even if the rest runs out of memory: a failed rotation that
        # retried at once would reconnect to the broker in a loop.
        self.state = "failed:" + step
        self._backoff_s, d = backoff(self._backoff_s, _FIRST_S, _MAX_S)
        d //= 1000
        self._retry_at = self.clock.now() + d
        self.tries += 1
        why = "out of memory"
        try:
            if mem:
                # No diagnose import here: there may be no room for it. MicroPython's message
                # names the allocation that failed ("... allocating 612 bytes"): with the free
                # total it tells fragmentation from a full heap.
                why = "out of memory at %s (%d bytes of RAM after a collection%s)" % (
                    at, self.room(), "; " + e.args[0]
                    if isinstance(e, MemoryError) and e.args else "")
            elif type(e) is str:
                why = e
            else:
                from upcert import diagnose  # loaded on a failure only

                why = diagnose.explain(e, self.config["endpoint"], self.config["port"])
            self.say("failed at %s: %s; retry in %d s" % (step, why, d))
        except MemoryError:
            gc.collect()
            try:
                self.say("failed at %s: %s; retry in %d s" % (step, why, d))
            except MemoryError:
                pass  # the state and the backoff above stand
        drop("diagnose")  # 5 KB on a 32-bit port: not to be carried into the next rotation
        if (self.want or self.job) and (give_up or self.tries >= _TRIES):
            if self.want:
                self.say("%s given up after %d tries" % (self.want, self.tries))
            self.want = None
            self.final = ("FAILED", {"step": step, "reason": why[:200]})
            if abandoned:
                self.final[1]["abandonedCertificateId"] = abandoned
            if client and step != "memory":  # else at the next service(), with the work gone
                self._report(client)

    def _report(self, client):
        # The job's final status, owed since a commit (SUCCEEDED, sent over the new identity:
        # only then may the cloud retire the old one) or a failure; none without a job.
        if self.clock.now() < self._hold:
            return
        f, self.final = self.final, None
        job, self.job = self.job, None
        if not job and f[0] == "SUCCEEDED":
            # No job to report to (expiry, a command): the same event a failure sends, so the
            # cloud sets the old certificate INACTIVE (the stand-in does; on AWS an IoT rule).
            client.publish(
                self.config["topics"]["telemetry"].rsplit("/", 1)[0] + "/rotation",
                '{"event":"rotation-done","oldCertificateId":"%s","newCertificateId":"%s"}'
                % (f[1]["oldCertificateId"], f[1]["newCertificateId"]), qos=1)
        if job:
            try:
                from upcert import jobs

                jobs.report(self, client, job, f[0], f[1])
                # A start-next reply in flight shows the job as it was before: ask afresh.
                self._ask = self._reply = None
                self.jobs_pending = True
            except MemoryError:  # still owed: again in _HOLD_S, after collections
                self.final, self.job = f, job
                self._hold = self.clock.now() + _HOLD_S
                self.say("%s %s not reported yet: out of memory" % (job[0], f[0]), "job ")
            finally:
                jobs = None
                drop(*_WORK)
