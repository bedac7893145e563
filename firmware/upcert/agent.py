# The device's main loop: connect (refusing an untrusted clock or an out-of-date certificate),
# subscribe to commands, publish telemetry, answer commands, rotate the certificate when due or
# asked (rotation.py, optional), reconnect with backoff.
# Every command gets one reply on the replies topic, in bounded memory: up to _MAX_REPLIES
# commands between two services of the link are answered in full (QoS 1, published by the loop);
# any more are answered at once from the MQTT callback, QoS 0 (nothing kept), with "busy" (a
# command: retry it later), "malformed command" (also an empty payload) or "command too large"
# (a payload over config max_message_bytes, skipped unread by mqtt.py; id from its JSON when
# found). Its QoS 1 PUBACK follows the reply. A flood costs one small write per command and one
# log line per service ("reply queue full: N commands answered at once"); telemetry goes on.
# Telemetry is QoS 1 and at least once: each message waits in a bounded queue (config "queue")
# until its PUBACK, so a publish that got none is sent again after the reconnect, and messages
# made while offline (once there was a connection) are sent in order; when the queue is full the
# oldest goes and "dropped" counts it. "seq" numbers them: the host sees gaps and duplicates.
# Everything it touches is injected; its log lines are a contract (tests and the demo grep them).
import gc
import json
from time import sleep_ms, ticks_add, ticks_diff, ticks_ms

from micropython import const

from upcert import backoff, drop, tlsconn
from upcert.errors import CertificateError, ClockNotSetError
from upcert.mqtt import Client

_BACKOFF_MAX_S = const(300)
_TICK_MS = const(100)  # how often the link is serviced while waiting for the next report
_MAX_REPLIES = const(4)  # replies queued between two services; more commands are answered busy


class Agent:
    """Agent(config, store, clock, connect, log=print, rotation=None, heap_room=gc.mem_free).

    config: dict from upcert.config.load; store: certificate() -> DER; clock: now(), trusted(),
    sync(), require_trusted(), iso(t); connect(host, port) -> socket-like (e.g.
    tlsconn.Connector.connect); log: one str per line (the serial console); rotation: an
    upcert.rotation.Rotation, None for a device that never rotates (no rotation telemetry), or
    False when it could not be loaded (telemetry "rotation": "off"); heap_room() -> bytes of RAM
    the device can count on (the board's figure; telemetry "free_heap"); net() raises
    (ConnectError) while the board's network link is down (board.network_up(config, 0)).
    """

    def __init__(self, config, store, clock, connect, log=print, rotation=None, heap_room=None,
                 net=None):
        self.config = config
        self.store = store
        self.clock = clock
        self.connect = connect
        self.log = log
        self.rot = rotation
        self.heap_room = heap_room or gc.mem_free
        self.topics = config["topics"]
        self._cmd_topic = self.topics["commands"].encode()
        self.mqtt = Client(
            config["client_id"],
            config.get("keepalive_s", 60),
            limit=config.get("max_message_bytes", 4096),
        )
        self.sleep_ms = sleep_ms  # replaceable in tests
        self.seq = 0
        self.connected = False
        self.tls = "builtin"
        self._cert = None
        self._good = False  # a telemetry PUBACK arrived on this connection
        self._backoff_s = 0
        self._replies = []
        self._busy = 0  # commands answered at once from the callback since the last log line
        self._up_ms = 0
        self._last_ms = ticks_ms()
        self.net = net
        self.queue = []  # (seq, JSON) of telemetry not yet acknowledged, oldest first
        self.dropped = 0
        self._due = self._last_ms  # when the next report falls due while offline

    def uptime_s(self):
        """Seconds since the agent started (immune to ticks_ms wrap-around)."""
        now = ticks_ms()
        self._up_ms += ticks_diff(now, self._last_ms)
        self._last_ms = now
        return self._up_ms // 1000

    def run(self, max_cycles=None):
        """Loop forever (or max_cycles cycles); a cycle is one report period or one failed
        attempt with its backoff wait. KeyboardInterrupt passes through after a DISCONNECT."""
        n = 0
        try:
            while max_cycles is None or n < max_cycles:
                self.cycle()
                n += 1
                gc.collect()
        finally:
            if self.connected:
                self.mqtt.disconnect()
                self.connected = False

    def cycle(self):
        """Connect if needed (waiting out the backoff on failure), else report and serve the
        link until the next report is due."""
        c = self.config
        if not self.connected:
            try:
                self._connect()
            except Exception as e:
                self.mqtt.close()
                why = self._explain(e)
                if self.rot:  # after a commit: the broker may refuse the new identity
                    self.connect = self.rot.refused(e, why) or self.connect
                if isinstance(e, ClockNotSetError):
                    self._retry(why if why.startswith("clock") else "clock not set: " + why)
                else:
                    self._retry("connection failed: " + why)
                return
        try:
            if self.rot and self._rotate():
                return
            self._report()
            self._serve(c["telemetry_interval_s"] * 1000)
        except Exception as e:
            self.mqtt.close()
            self.connected = False
            why = "link lost: " + self._explain(e)
            if self._good:
                self.log("upcert: " + why)
            else:  # dropped before any report got through: do not hammer the broker
                self._retry(why)

    def _explain(self, e):
        # diagnose.explain(e), its module in RAM only meanwhile: 5 KB on a 32-bit port that a
        # board whose link failed once must not carry into its next rotation. When even that
        # finds no room (e may be a MemoryError), the exception's own words: the loop goes on.
        c = self.config
        try:
            from upcert import diagnose

            return diagnose.explain(e, c["endpoint"], c["port"])
        except MemoryError:
            gc.collect()
            return "%s: %s" % (type(e).__name__, e)
        finally:
            diagnose = None
            drop("diagnose")

    def _read_cert(self):
        from upcert.certlean import Cert

        try:
            return tlsconn.Ident(Cert(self.store.certificate()))
        except CertificateError as e:
            raise CertificateError(
                "device certificate unreadable (%s): run upcert provision" % e
            ) from None

    def _connect(self):
        if self.net:
            self.net()  # the link first: no lookups while the Wi-Fi is down
        if not self.clock.trusted():
            try:
                self.clock.sync()
            except Exception:
                pass  # require_trusted() below explains
        try:
            cert = self._read_cert()
        finally:
            drop("certlean")  # read once per connection: no need to keep its code
        tlsconn.check_validity(cert, self.clock)
        c = self.config
        self.log("upcert: connecting %s:%s as %s" % (c["endpoint"], c["port"], c["client_id"]))
        sock = self.connect(c["endpoint"], c["port"])
        self.mqtt.set_callback(self._on_message)
        self.mqtt.connect(sock)
        self._up(cert, sock)

    def _up(self, cert, sock):
        # The MQTT session is up with cert's identity over sock (ours, or a rotation's trial
        # connection): log it, subscribe, hand the link to the rotation.
        self._cert = cert
        self._good = False
        info = getattr(sock, "cipher", None)
        info = info() if info else None
        suite = info[0] if info else "offered %d AWS suites" % len(tlsconn.aws_suites())
        self.tls = getattr(sock, "tls", "builtin")  # upcert's TLS client, or the tls module
        self.log(
            "upcert: connected TLS 1.2 %s (%s) cert %s expires %s (%d days)"
            % (
                suite,
                self.tls,
                cert.cert_id()[:16],
                self.clock.iso(cert.not_after),
                int(cert.days_left(self.clock.now())),
            )
        )
        self.mqtt.subscribe(self.topics["commands"], 1)
        if self.rot:
            self.rot.attach(self.mqtt)  # job events; a job may be waiting
        self.connected = True

    def _retry(self, why):
        # Exponential backoff 1 s .. 300 s plus up to 25 % random jitter; reset by a good report.
        self._backoff_s, ms = backoff(self._backoff_s, 1, _BACKOFF_MAX_S)
        self.log("upcert: %s; retry in %d.%d s" % (why, ms // 1000, ms % 1000 // 100))
        self._idle(ms)

    def _online(self):
        try:
            self.net()
            return True
        except Exception:
            return False

    def _idle(self, ms):
        # The backoff wait: telemetry that falls due meanwhile is queued (once a connection
        # gave the agent its identity); after a failure with the link down, the link coming
        # back ends the wait (polled each second: the driver reconnects by itself).
        i = self.config["telemetry_interval_s"] * 1000
        down = self.net and not self._online()
        while ms > 0:
            t = ms
            if i and self._cert:
                d = ticks_diff(self._due, ticks_ms())
                if d <= 0:
                    self._tell()
                    d = i
                t = min(t, d)
            if down:
                t = min(t, 1000)
            self.sleep_ms(t)
            ms -= t
            if down and self._online():
                return

    def _tell(self):
        # One telemetry message into the queue; when full, the oldest is dropped and counted.
        self._due = ticks_add(ticks_ms(), self.config["telemetry_interval_s"] * 1000)
        self.seq += 1
        q = self.queue
        if len(q) >= self.config.get("queue", 8):
            q.pop(0)
            self.dropped += 1
        cert = self._cert
        m = {
            "thing": self.config["thing"],
            "uptime_s": self.uptime_s(),
            "free_heap": self.heap_room(),
            "cert_id": cert.cert_id(),
            "days_left": int(cert.days_left(self.clock.now())),
            "clock": "trusted" if self.clock.trusted() else "untrusted",
            "seq": self.seq,
            "tls": self.tls,
            "dropped": self.dropped,
        }
        if self.rot:
            m["rotation"] = self.rot.state  # idle, due, in-progress, failed:<step>, done
            m["renew_due"] = self.rot.due_iso()
        elif self.rot is False:
            m["rotation"] = "off"  # start.py: no RAM left for it
        q.append((self.seq, json.dumps(m)))

    def _report(self):
        # A new message, then the queue in order; each leaves it only once acknowledged.
        self._tell()
        q = self.queue
        while q:
            self.mqtt.publish(self.topics["telemetry"], q[0][1], qos=1)
            n = q.pop(0)[0]
            if self.rot:
                self.rot.proven()  # a new identity has done real work: no rollback any more
            self._good = True
            self._backoff_s = 0
            self.log("upcert: published telemetry seq=%d" % n)

    def _serve(self, ms):
        deadline = ticks_add(ticks_ms(), ms)
        while True:
            self.mqtt.service()
            while self._replies:
                reply = self._replies.pop(0)
                self.mqtt.publish(self.topics["replies"], json.dumps(reply), qos=1)
                if reply.get("ok"):
                    self.log("upcert: command %s id=%s answered" % (reply["cmd"], reply["id"]))
                else:
                    self.log("upcert: command refused: %s" % reply["error"])
            if self._busy:
                self.log("upcert: reply queue full: %d commands answered at once" % self._busy)
                self._busy = 0
            if self.rot and self.rot.pending() and self._rotate():
                return
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                return
            self.sleep_ms(min(left, _TICK_MS))

    def _rotate(self):
        # Jobs, renewal decision, rotation; True when the link changed: a new identity was
        # committed and the client is connected with it (the trial connection stays), or the link
        # was closed for a trial that failed (the next cycle reconnects with the identity we had).
        r = self.rot.service(self.mqtt, self._cert)
        if not r:
            return False
        if r == "lost":
            self.connected = False
            # AWS IoT allows one CONNECT per second per client id, and the trial just used ours.
            self.sleep_ms(1000)
            return True
        # The trial's context, for later reconnections, and the identity the rotation checked.
        self.connect, cert = self.rot.connect_new()
        self._up(cert, self.mqtt.sock.sock)
        return True

    def _on_message(self, topic, msg):
        # Called by mqtt inside service()/publish(): queue the reply, or when the queue is full
        # answer at once with QoS 0 (a write, no wait for an ack: nothing is read from here).
        if self.rot and self.rot.on_message(topic, msg):
            return
        if topic != self._cmd_topic:
            return
        if len(self._replies) < _MAX_REPLIES:
            self._replies.append(self.answer(msg))
            return
        self.mqtt.publish(self.topics["replies"], json.dumps(self.answer(msg, True)), qos=0)
        self._busy += 1

    def answer(self, msg, busy=False):
        """Reply dict for one command message (bytes, or an mqtt.Big for one over the size
        limit); busy: refuse a well-formed command (retry later) instead of running it. Never
        raises on bad input."""
        if not isinstance(msg, (bytes, bytearray)):  # an upcert.big.Big (not imported here)
            return {
                "id": msg.get("id", 1),
                "ok": False,
                "error": "command too large: %d bytes > %d" % (msg.n, msg.limit),
            }
        try:
            req = json.loads(msg)
            cmd = req.get("cmd")  # AttributeError unless a JSON object
            cid = req.get("id")
        except Exception:
            return {"id": None, "ok": False, "error": "malformed command: want a JSON object"}
        if busy:
            return {"id": cid, "cmd": cmd, "ok": False, "error": "busy: too many commands, retry"}
        if cmd == "ping":
            return {"id": cid, "cmd": "ping", "ok": True, "uptime_s": self.uptime_s()}
        if cmd == "rotate" and self.rot:  # quicker than a job: rotate at the next chance
            self.rot.request("command")
            return {"id": cid, "cmd": "rotate", "ok": True}
        return {"id": cid, "cmd": cmd, "ok": False, "error": "unknown command '%s'" % cmd}
