# MQTT 3.1.1 for AWS IoT: takes an already connected socket, sends each packet as one write (one
# TLS record), bounds every wait, pings on idle, checks AWS limits. The protocol is ours whole:
# umqtt.simple's MQTTClient (micropython-lib) opens its own socket in connect(), checks with
# assert (stripped by mpy-cross -O), waits forever for PUBACK/SUBACK and reads every payload
# whole, so every packet is framed here; subclassing it for its constructor, set_callback and
# check_msg kept all of its code in RAM (3.9 KB on a 32-bit port). Its attribute names are kept
# (client_id, pid, keepalive, cb, lw_*), and its check_msg()/wait_msg() split.
# Receiving: a PUBLISH goes to cb(topic, payload), then QoS 1 gets its PUBACK (MQTT 3.1.1 §3.3.4:
# only once the callback has taken the message, in the order received). A payload over `limit`
# bytes (known from the Remaining Length before anything is allocated) is never held: it is read
# past in pieces through the send buffer, and cb gets a Big instead: its length and the few
# shallow JSON fields met on the way (enough to answer it: a command's id, a job's id). An empty
# payload is a message like any other (b"").
# Every MqttError carries a reason (upcert.errors) for callers to decide on, never its text.
import errno
from time import sleep_ms, ticks_add, ticks_diff, ticks_ms

from micropython import const

from upcert.errors import CLOSED, PROTOCOL, REFUSED, SERVER, TIMEOUT, MqttError

# AWS IoT Core message broker quotas (AWS General Reference, "AWS IoT Core endpoints and quotas").
_MAX_CLIENT_ID = const(128)
_MAX_TOPIC = const(256)
_MAX_SLASHES = const(7)
_MAX_PAYLOAD = const(131072)  # 128 KB
_MAX_WILL = const(65535)  # the will message has a 2-byte length in CONNECT (§3.1.3.3)
_RULES = const(b"$aws/rules/")  # Basic Ingest prefix $aws/rules/<rule>/: excluded from both limits
_POLL_MS = const(10)
_BURST = const(8)  # packets handled per service() call, so a flood cannot starve the agent
_LIMIT = const(4096)  # default largest payload held in RAM (config "max_message_bytes")
_NO_CONNACK = const(
    "the broker closed the connection after CONNECT: its policy does not allow iot:Connect for"
    " this client id, or our certificate is not attached to a policy"
)


def _ignore(topic, msg):
    pass


def _qos(qos):
    if qos != 0 and qos != 1:
        raise ValueError("QoS %r: AWS IoT supports QoS 0 and 1" % qos)


def check_topic(topic, wildcards=False):
    """Topic as bytes after the AWS IoT checks: <= 256 bytes and <= 7 slashes, not counting a
    Basic Ingest prefix `$aws/rules/<rule>/` (reserved `$aws/things/...` topics count in full);
    no '+'/'#' unless wildcards (a subscription filter). ValueError names the limit."""
    b = topic.encode() if isinstance(topic, str) else bytes(topic)
    eff = b
    if b.startswith(_RULES):
        i = b.find(b"/", len(_RULES))
        eff = b[i + 1 :] if i > 0 else b""
    if not eff:
        raise ValueError("empty topic %r: name at least one level" % topic)
    if len(eff) > _MAX_TOPIC:
        raise ValueError("topic %r is %d bytes: AWS IoT allows 256" % (topic, len(eff)))
    n = eff.count(b"/")
    if n > _MAX_SLASHES:
        raise ValueError("topic %r has %d slashes: AWS IoT allows 7" % (topic, n))
    if not wildcards and (b"+" in b or b"#" in b):
        raise ValueError("topic %r: '+' and '#' are only for subscriptions" % topic)
    return b


class _Wire:
    """The client's socket. Writes gather in one reused buffer until flush() (before any read
    and at the end of each client call); setblocking(True), which would clear the socket's
    timeout, restores it instead. sock: read, write, setblocking, settimeout, close."""

    def __init__(self, bufsize):
        self.mv = memoryview(bytearray(bufsize))
        self.n = 0
        self.sock = None
        self.timeout_s = 15
        self.nb = False
        self.rx = 0  # reads that returned data, so service() can tell progress
        self.rx_ms = self.tx_ms = 0

    def attach(self, sock, timeout_s):
        self.sock = sock
        self.timeout_s = timeout_s
        self.n = 0
        self.rx_ms = self.tx_ms = ticks_ms()
        self.setblocking(True)

    def setblocking(self, flag):
        self.nb = not flag
        if flag:
            self.sock.settimeout(self.timeout_s)
        else:
            self.sock.setblocking(False)

    def write(self, data, n=-1):
        if n < 0:
            n = len(data)
        if self.n + n > len(self.mv):
            self.flush()
            if n > len(self.mv):  # bigger than the buffer: header record, then this one
                self._send(memoryview(data)[:n])
                return n
        self.mv[self.n : self.n + n] = memoryview(data)[:n]
        self.n += n
        return n

    def flush(self):
        n = self.n
        if n:
            self.n = 0
            nb = self.nb
            if nb:  # send whole, then back to polling
                self.sock.settimeout(self.timeout_s)
            self._send(self.mv[:n])
            if nb:
                self.sock.setblocking(False)

    def _send(self, mv):
        while mv:
            k = self.sock.write(mv)
            if not k:
                raise MqttError("could not send to the broker in %d s" % self.timeout_s, TIMEOUT)
            mv = mv[k:]
        self.tx_ms = ticks_ms()

    def read(self, n):
        if not n:
            return b""  # an empty payload or topic: the socket would say b"", "closed"
        self.flush()
        d = b""
        while True:
            more = self.sock.read(n - len(d))
            if more == b"":
                raise MqttError("the broker closed the connection", CLOSED)
            if more is None:  # non-blocking: nothing yet; blocking: a port's timeout
                if self.nb:
                    return None
                raise MqttError("no data from the broker in %d s" % self.timeout_s, TIMEOUT)
            d = d + more if d else more  # a TLS record may end inside an MQTT packet
            self.rx += 1
            self.rx_ms = ticks_ms()
            if self.nb or len(d) >= n:
                return d

    def skip(self, n, sink=None):
        # Read past n bytes through the send buffer (flushed: empty), giving each piece to
        # sink.feed(); blocking (after a packet's first byte). Returns b"".
        self.flush()
        mv = self.mv
        while n:
            k = self.sock.readinto(mv, min(n, len(mv)))
            if k == 0:
                raise MqttError("the broker closed the connection", CLOSED)
            if k is None:
                raise MqttError("no data from the broker in %d s" % self.timeout_s, TIMEOUT)
            if sink:
                sink.feed(mv[:k])
            n -= k
            self.rx += 1
            self.rx_ms = ticks_ms()
        return b""

    def close(self):
        self.n = 0
        if self.sock:
            self.sock.close()
            self.sock = None


class Client:
    """MQTT 3.1.1 client for AWS IoT; connect() takes a connected socket (e.g. TlsSocket).
    limit: the largest incoming payload held in RAM (bytes); a bigger one reaches cb as a Big."""

    def __init__(self, client_id, keepalive_s=60, timeout_s=15, bufsize=512, limit=_LIMIT):
        cid = client_id.encode() if isinstance(client_id, str) else bytes(client_id)
        if not 0 < len(cid) <= _MAX_CLIENT_ID:
            raise ValueError("client id is %d bytes: AWS IoT allows 1..128" % len(cid))
        self.client_id = cid
        self.keepalive = keepalive_s
        self.pid = 0
        self.lw_topic = self.lw_msg = None  # the last will (set_last_will)
        self.lw_qos = 0
        self.lw_retain = False
        self.timeout_s = timeout_s
        self.cb = _ignore
        self.sock = _Wire(bufsize)  # stays ours across connections (connect() attaches)
        self._hdr = bytearray(5)
        self._ping_ms = None
        self.limit = limit

    def set_callback(self, cb):
        """cb(topic, msg) gets every PUBLISH received (topic bytes, msg bytes or a Big)."""
        self.cb = cb

    def _header(self, ptype, rem):
        # Fixed header: type/flags byte + Remaining Length varint (MQTT 3.1.1 §2.2.3).
        h = self._hdr
        h[0] = ptype
        i = 1
        while rem > 0x7F:
            h[i] = (rem & 0x7F) | 0x80
            rem >>= 7
            i += 1
        h[i] = rem
        self.sock.write(h, i + 1)

    def _u16(self, v, s=b""):
        # Two-byte big-endian integer, then s: a length-prefixed string when v = len(s) (§1.5.3).
        h = self._hdr
        h[0] = v >> 8
        h[1] = v & 0xFF
        self.sock.write(h, 2)
        self.sock.write(s)

    def _next_pid(self):
        self.pid = self.pid % 65535 + 1  # 1..65535, never 0 (MQTT 3.1.1 §2.3.1)
        return self.pid

    def set_last_will(self, topic, msg, retain=False, qos=0):
        """Will (MQTT 3.1.1 §3.1.2.5-7) the broker publishes when the link drops without
        DISCONNECT; sent by the next connect(). topic: as for publish; msg: bytes or str, up
        to 65535 bytes; qos 0 or 1. ValueError, nothing stored, for anything AWS refuses."""
        t = check_topic(topic)
        if isinstance(msg, str):
            msg = msg.encode()
        if len(msg) > _MAX_WILL:
            raise ValueError("will message is %d bytes: CONNECT allows 65535" % len(msg))
        _qos(qos)
        self.lw_topic = t
        self.lw_msg = msg
        self.lw_qos = qos
        self.lw_retain = retain

    def connect(self, sock, clean_session=True):
        """CONNECT over `sock` (one write), with the last will if set; wait timeout_s for
        CONNACK; returns session-present. Refusals raise MqttError naming the CONNACK code's
        cause, .reason REFUSED (CONNACK 4/5, closed after CONNECT), PROTOCOL (other codes),
        SERVER (not a CONNACK) or TIMEOUT."""
        w = self.sock
        w.attach(sock, self.timeout_s)
        self._ping_ms = None
        cid = self.client_id
        t = self.lw_topic
        m = self.lw_msg
        h = self._hdr
        n = 12 + len(cid)
        f = 2 if clean_session else 0  # connect flags (§3.1.2.3)
        if t:
            n += 4 + len(t) + len(m)
            f |= 4 | self.lw_qos << 3 | (0x20 if self.lw_retain else 0)
        self._header(0x10, n)
        w.write(b"\x00\x04MQTT\x04")  # protocol name, level 4 = 3.1.1 (§3.1.2.1-2)
        h[0] = f
        h[1] = self.keepalive >> 8
        h[2] = self.keepalive & 0xFF
        w.write(h, 3)
        self._u16(len(cid), cid)
        if t:  # will topic, will message (§3.1.3.2-3)
            self._u16(len(t), t)
            self._u16(len(m), m)
        w.flush()  # a send failure stays one, not "no CONNACK"
        try:
            resp = w.read(4)
        except (MqttError, OSError) as e:
            r = getattr(e, "reason", None)
            if r == CLOSED:
                raise MqttError(_NO_CONNACK, REFUSED) from None
            if r == TIMEOUT or isinstance(e, OSError) and e.args[0] == errno.ETIMEDOUT:
                raise MqttError(
                    "no CONNACK from the broker in %d s" % self.timeout_s, TIMEOUT
                ) from None
            raise
        if resp[0] != 0x20 or resp[1] != 2:
            raise MqttError("not an MQTT broker: no CONNACK but %r" % resp, SERVER)
        rc = resp[3]
        if rc:
            from upcert import diagnose  # loaded only on a refusal

            raise MqttError(diagnose.connack(rc), REFUSED if rc == 4 or rc == 5 else PROTOCOL)
        return resp[2] & 1

    def publish(self, topic, msg, retain=False, qos=1, timeout_ms=None):
        """PUBLISH msg (bytes or str) to topic; QoS 1 waits for PUBACK up to timeout_ms
        (default timeout_s) and raises MqttError instead of waiting forever."""
        t = check_topic(topic)
        if isinstance(msg, str):
            msg = msg.encode()
        if len(msg) > _MAX_PAYLOAD:
            raise ValueError("payload is %d bytes: AWS IoT allows 131072 (128 KB)" % len(msg))
        _qos(qos)
        self._header(0x30 | qos << 1 | (1 if retain else 0), 2 + len(t) + len(msg) + 2 * qos)
        self._u16(len(t), t)
        if qos:
            pid = self._next_pid()
            self._u16(pid)
        self.sock.write(msg)
        self.sock.flush()
        if qos:
            self._await(0x40, pid, timeout_ms, topic)

    def subscribe(self, topic, qos=1, timeout_ms=None):
        """SUBSCRIBE to one topic filter; returns the granted QoS. A refusal (SUBACK 0x80) or
        no SUBACK within timeout_ms raises MqttError naming the topic."""
        t = check_topic(topic, True)
        pid = self._next_pid()
        self._header(0x82, 5 + len(t))
        self._u16(pid)
        self._u16(len(t), t)
        self._hdr[0] = qos
        self.sock.write(self._hdr, 1)
        self.sock.flush()
        rc = self._await(0x90, pid, timeout_ms, topic)[2]
        if rc == 0x80:
            raise MqttError(
                "broker refused subscription to %r (SUBACK 0x80): policy" % topic, PROTOCOL
            )
        return rc

    def _await(self, want, pid, timeout_ms, topic):
        # Poll (non-blocking first byte) until the ack for pid arrives; PUBLISH and PINGRESP on
        # the way are handled by wait_msg (callback, PUBACK).
        ms = timeout_ms if timeout_ms is not None else self.timeout_s * 1000
        deadline = ticks_add(ticks_ms(), ms)
        while True:
            op = self.check_msg()
            if op is None:
                if ticks_diff(deadline, ticks_ms()) <= 0:
                    raise MqttError(
                        ("no PUBACK for %r in %d ms" if want == 0x40 else "no SUBACK for %r in %d ms")
                        % (topic, ms),
                        TIMEOUT,
                    )
                sleep_ms(_POLL_MS)
                continue
            body = self._body()
            if op == want and len(body) >= 2 and (body[0] << 8 | body[1]) == pid:
                self.sock.flush()
                return body

    def _len(self):
        # Remaining Length (§2.2.3): 1-4 bytes, 7 bits each, low first.
        n = s = 0
        while True:
            b = self.sock.read(1)[0]
            n |= (b & 0x7F) << s
            if not b & 0x80:
                return n
            s += 7
            if s > 21:
                raise MqttError("malformed packet length from the broker", PROTOCOL)

    def _body(self):
        n = self._len()
        return self.sock.read(n) if n <= self.limit else self.sock.skip(n)

    def check_msg(self):
        """wait_msg() if a packet has started arriving, else None at once."""
        self.sock.setblocking(False)
        return self.wait_msg()

    def wait_msg(self):
        """One packet (check_msg(): if one has started arriving): a PUBLISH goes to the callback,
        then QoS 1 is acknowledged; PINGRESP is eaten (None); another packet's type is returned,
        its Remaining Length and body left for the caller."""
        w = self.sock
        b = w.read(1)
        w.setblocking(True)
        if b is None:
            return None
        op = b[0]
        if op == 0xD0:  # PINGRESP
            self._body()
            return None
        if op & 0xF0 != 0x30:
            return op
        n = self._len()
        b = w.read(2)
        k = b[0] << 8 | b[1]  # topic length
        n -= k + (4 if op & 6 else 2)  # the payload's length
        if n < 0:
            raise MqttError("malformed PUBLISH from the broker", PROTOCOL)
        t = w.read(k)
        if op & 6:
            b = w.read(2)  # packet id
        if n > self.limit:
            from upcert.big import Big  # only for a payload over the limit

            m = Big(n, self.limit)
            w.skip(n, m)
        else:
            m = w.read(n)
        self.cb(t, m)
        if op & 6 == 2:  # PUBACK with the packet id (§3.4)
            self._header(0x40, 2)
            w.write(b)

    def service(self):
        """Call often from the agent loop: handles arrived messages (callback), answers QoS 1,
        sends PINGREQ after keepalive/2 without sending, and raises MqttError when nothing
        arrived for 1.5 x keepalive after a ping (MQTT 3.1.1 §3.1.2.10)."""
        w = self.sock
        for _ in range(_BURST):
            rx = w.rx
            op = self.check_msg()
            if op is not None:
                self._body()  # stray ack (e.g. after an earlier timeout): skip it
            elif w.rx == rx:
                break
        w.flush()
        if not self.keepalive:
            return
        now = ticks_ms()
        ka = self.keepalive * 1000
        if self._ping_ms is not None:
            if ticks_diff(w.rx_ms, self._ping_ms) >= 0:
                self._ping_ms = None  # something arrived since the ping: link alive
            elif ticks_diff(now, w.rx_ms) >= ka * 3 // 2:
                raise MqttError("no PINGRESP (keepalive %d s): link dead" % self.keepalive, TIMEOUT)
        if ticks_diff(now, w.tx_ms) >= ka // 2:
            self.ping()
            if self._ping_ms is None:
                self._ping_ms = now

    def ping(self, pkt=b"\xc0\x00"):
        """Send PINGREQ (or another 2-byte packet) now."""
        self.sock.write(pkt)
        self.sock.flush()

    def disconnect(self):
        """Send DISCONNECT (best effort) and close the socket."""
        try:
            self.ping(b"\xe0\x00")
        except Exception:
            pass
        self.close()

    def close(self):
        """Close the socket without DISCONNECT (after a failure)."""
        self.sock.close()
