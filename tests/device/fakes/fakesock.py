# Test doubles for the network side of the device package: a socket on io.BytesIO that records
# every write, plus tiny check helpers shared by test_tlsconn/diagnose/mqtt/agent.
import errno
import io


class FakeSock:
    """Socket-like (read, readinto, write, setblocking, settimeout, close). Data given to feed()
    is read back; with nothing left a non-blocking read returns None, a blocking one raises
    OSError(ETIMEDOUT) as the unix tls module does, or returns b"" after eof(); read(0) is b"".
    reply(packet_bytes) -> bytes is called for each write, to play the broker."""

    def __init__(self, incoming=b"", reply=None, chunk=0):
        self.pending = bytearray(incoming)
        self.reply = reply
        self.chunk = chunk  # >0: serve at most this many bytes per read (split records)
        self.wire = io.BytesIO()  # everything written, in order
        self.writes = []  # one entry per write() call
        self.blocking = True
        self.timeout = None
        self.closed = False
        self.at_eof = False
        self.biggest = 0  # the most bytes one read()/readinto() asked for

    def feed(self, data):
        self.pending.extend(data)

    def eof(self):
        self.at_eof = True

    def read(self, n):
        self.biggest = max(self.biggest, n)
        if not n:
            return b""  # as a stream does, at end of file or not
        if not self.pending:
            if self.at_eof:
                return b""
            if not self.blocking:
                return None
            raise OSError(errno.ETIMEDOUT)
        if self.chunk:
            n = min(n, self.chunk)
        d = bytes(self.pending[:n])
        self.pending = self.pending[n:]
        return d

    def readinto(self, buf, n=-1):
        # As a stream's readinto(buf[, nbytes]): the count read, 0 at end of file, None when a
        # non-blocking socket has nothing yet.
        d = self.read(len(buf) if n < 0 else n)
        if d is None:
            return None
        memoryview(buf)[: len(d)] = d
        return len(d)

    def write(self, buf, n=-1):
        if self.closed:
            raise OSError(errno.EBADF)
        data = bytes(buf if n < 0 else memoryview(buf)[:n])
        self.wire.write(data)
        self.writes.append(data)
        if self.reply:
            back = self.reply(data)
            if back:
                self.feed(back)
        return len(data)

    def setblocking(self, flag):
        self.blocking = flag
        self.timeout = None

    def settimeout(self, t):
        self.blocking = True
        self.timeout = t

    def close(self):
        self.closed = True


def eq(got, want, what=""):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def raises(exc_type, fn, *args, **kw):
    """Call fn; return the exception of exc_type it raised, fail if none."""
    try:
        fn(*args, **kw)
    except exc_type as e:
        return e
    raise AssertionError("%s not raised by %s" % (exc_type.__name__, fn))


def has(text, *parts):
    for p in parts:
        if p not in text:
            raise AssertionError("%r not in %r" % (p, text))


class FakeBroker:
    """Plays an MQTT 3.1.1 broker on a FakeSock: CONNACK, SUBACK, PUBACK for QoS 1 (unless
    ack=False), records (topic, payload) of each PUBLISH, and can queue packets to send."""

    def __init__(self, connack=0, suback=1, ack=True):
        self.connack = connack
        self.suback = suback
        self.ack = ack
        self.published = []
        self.subscribed = []
        self.after_publish = []  # packets fed to the client after the next PUBLISH
        self.sock = None
        self.disconnected = False

    def socket(self, *args):
        self.sock = FakeSock(reply=self.reply)
        return self.sock

    def reply(self, p):
        kind = p[0] & 0xF0
        if kind == 0x10:
            return b"\x20\x02\x00" + bytes([self.connack])
        if kind == 0x80:
            self.subscribed.append(bytes(p[6 : 6 + (p[4] << 8 | p[5])]))
            return b"\x90\x03" + p[2:4] + bytes([self.suback])
        if kind == 0xE0:
            self.disconnected = True
            return None
        if kind != 0x30:
            return None
        i, n, mult = 1, 0, 1  # remaining length varint
        while True:
            n += (p[i] & 0x7F) * mult
            mult *= 128
            i += 1
            if not p[i - 1] & 0x80:
                break
        tl = p[i] << 8 | p[i + 1]
        topic = bytes(p[i + 2 : i + 2 + tl])
        j = i + 2 + tl
        out = b""
        if p[0] & 0x06:
            if self.ack:
                out = b"\x40\x02" + p[j : j + 2]
            j += 2
        self.published.append((topic, bytes(p[j:])))
        while self.after_publish:
            out += self.after_publish.pop(0)
        return out


def publish_packet(topic, payload, qos=0, pid=1):
    """Bytes of a PUBLISH as the broker would send it."""
    t = topic.encode()
    body = bytes([len(t) >> 8, len(t) & 0xFF]) + t
    if qos:
        body += bytes([pid >> 8, pid & 0xFF])
    body += payload
    n = len(body)
    rl = b""
    while True:
        b = n & 0x7F
        n >>= 7
        rl += bytes([b | (0x80 if n else 0)])
        if not n:
            break
    return bytes([0x30 | qos << 1]) + rl + body
