# The record layer of upcert's own TLS 1.2 client (RFC 5246 §6) and its socket-like face: what
# an open connection keeps in RAM. The handshake is tls12.py's, in modules loaded only while it
# runs (tls12hs: hellos; chain: the server's certificates; tls12kx: key exchange, Finished).
import os

from micropython import const

from upcert.errors import CLOSED, PROTOCOL, SERVER, TIMEOUT, UpcertError

# record content types (RFC 5246 §6.2.1)
_CCS = const(20)
_ALERT = const(21)
HS = const(22)
_APP = const(23)
_HELLO_REQUEST = const(0)  # handshake type (§7.4)
# alerts (§7.2)
CLOSE_NOTIFY = const(0)
UNEXPECTED_MESSAGE = const(10)
BAD_RECORD_MAC = const(20)
RECORD_OVERFLOW = const(22)
HANDSHAKE_FAILURE = const(40)
BAD_CERTIFICATE = const(42)
ILLEGAL_PARAMETER = const(47)
DECODE_ERROR = const(50)
DECRYPT_ERROR = const(51)
PROTOCOL_VERSION = const(70)
INTERNAL_ERROR = const(80)
NO_RENEGOTIATION = const(100)
UNSUPPORTED_EXTENSION = const(110)
NO_APPLICATION_PROTOCOL = const(120)
# suite -> (server key type, GCM?)
SUITES = {0xC02B: ("EC", True), 0xC02F: ("RSA", True), 0xC023: ("EC", False), 0xC027: ("RSA", False)}
_MAX_PLAIN = const(16384)  # 2^14 (§6.2.1)
_MAX_CIPHER = const(18432)  # 2^14 + 2048 (§6.2.3)
_MAX_HS = const(24576)  # one handshake message (a certificate chain) at most
_SEND_MAX = const(4096)  # plaintext per record we send


class TlsError(UpcertError):
    """The TLS connection failed or was refused: .alert is the alert sent or received (or
    None), .received says which; .reason one of upcert.errors' codes."""

    alert = None
    received = False


def fail(alert, message, reason=PROTOCOL):
    """TlsError(message, reason) that sends `alert` (None: none)."""
    e = TlsError(message, reason)
    e.alert = alert
    return e


def u16(b, i):
    return b[i] << 8 | b[i + 1]


def _u24(b, i):
    return b[i] << 16 | b[i + 1] << 8 | b[i + 2]


class Gcm:
    # AES-128-GCM record protection (RFC 5288 §3): nonce = 4-byte implicit salt || 8-byte
    # explicit part (the sequence number, sent in the record); AAD = seq || type || version || len.
    def __init__(self, key, salt):
        from upcert.gcm import GCM

        self.g = GCM(key)
        self.salt = salt

    def seal(self, seq8, ctype, data):
        aad = seq8 + bytes((ctype, 3, 3)) + len(data).to_bytes(2, "big")
        return seq8 + self.g.seal(self.salt + seq8, aad, data)

    def open(self, seq8, ctype, payload):
        n = len(payload) - 24
        if n < 0:
            raise fail(BAD_RECORD_MAC, "record too short for AES-GCM", SERVER)
        aad = seq8 + bytes((ctype, 3, 3)) + n.to_bytes(2, "big")
        try:
            return self.g.open(self.salt + bytes(payload[:8]), aad, payload[8:])
        except ValueError:
            raise fail(BAD_RECORD_MAC, "record failed its AES-GCM tag check", SERVER) from None


class Cbc:
    # AES-128-CBC with HMAC-SHA256, MAC-then-encrypt and an explicit IV (RFC 5246 §6.2.3.2).
    def __init__(self, key, mac_key):
        from upcert.cbc import CBC

        self.c = CBC(key, mac_key)

    def seal(self, seq8, ctype, data):
        return self.c.seal(seq8 + bytes((ctype, 3, 3)), data, os.urandom(16))

    def open(self, seq8, ctype, payload):
        try:
            return self.c.open(seq8 + bytes((ctype, 3, 3)), payload)
        except ValueError:
            # padding and MAC failures look the same (RFC 5246 §6.2.3.2, Lucky Thirteen)
            raise fail(BAD_RECORD_MAC, "record failed its MAC check (AES-CBC)", SERVER) from None


class Reader:
    """Bounds-checked reads in one handshake message; any overrun is a decode_error."""

    def __init__(self, data, what):
        self.b = data
        self.i = 0
        self.what = what

    def need(self, n):
        if self.i + n > len(self.b):
            raise fail(DECODE_ERROR, "%s: truncated" % self.what)
        i = self.i
        self.i += n
        return i

    def u8(self):
        return self.b[self.need(1)]

    def u16(self):
        return u16(self.b, self.need(2))

    def take(self, n):
        i = self.need(n)
        return self.b[i : i + n]

    def vec(self, n):
        if n == 3:
            k = _u24(self.b, self.need(3))
        else:
            k = self.u8() if n == 1 else self.u16()
        return self.take(k)

    def end(self):
        if self.i != len(self.b):
            raise fail(DECODE_ERROR, "%s: %d bytes too many" % (self.what, len(self.b) - self.i))


class Record:
    """A TLS 1.2 connection's record layer over a connected TCP socket, and the socket-like face
    upcert.mqtt uses: read(n), readinto(buf, n), write(buf), setblocking(flag), settimeout(s),
    close(), cipher(). tls12.TlsClient adds the handshake."""

    tls = "upcert"  # which TLS client: telemetry says so (the tls module's sockets: "builtin")

    def __init__(self, sock, timeout_s):
        self.sock = sock
        self._nb = False
        self._timeout = timeout_s
        self._rseq = self._wseq = 0
        self._rc = self._wc = None  # record protection once ChangeCipherSpec is done
        self._hdr = bytearray(5)
        self._hn = 0  # header bytes read so far
        self._body = None
        self._bn = 0
        self._plain = b""  # application data read but not yet returned
        self._hs = b""  # handshake bytes not yet made into messages
        self._th = None  # the handshake's transcript hashes
        self._closed = False
        self.suite = None
        self.alpn = None
        sock.settimeout(timeout_s)

    # ---- handshake messages ---------------------------------------------------------------
    def send_hs(self, t, body):
        msg = bytes((t,)) + len(body).to_bytes(3, "big") + body
        for h in self._th:
            h.update(msg)
        self.record(HS, msg)

    def next_hs(self):
        # the next handshake message (type, body); messages may span records (§6.2.1)
        while True:
            hs = self._hs
            if len(hs) >= 4:
                n = _u24(hs, 1)
                if n > _MAX_HS:
                    raise fail(RECORD_OVERFLOW, "handshake message of %d bytes" % n, SERVER)
                if len(hs) >= 4 + n:
                    msg = hs[: 4 + n]
                    self._hs = hs[4 + n :]
                    if msg[0] == _HELLO_REQUEST:
                        continue  # §7.4.1.1: ignored during a handshake, never hashed
                    for h in self._th or ():
                        h.update(msg)
                    return msg[0], memoryview(msg)[4:]
            t, body = self.read_record()
            if t != HS:
                raise fail(UNEXPECTED_MESSAGE, "expected a handshake record, got type %d" % t)
            self._hs = hs + bytes(body) if hs else bytes(body)

    # ---- records --------------------------------------------------------------------------
    def record(self, t, data):
        if self._wc:
            seq8 = self._wseq.to_bytes(8, "big")
            data = self._wc.seal(seq8, t, data)
        self._wseq += 1
        rec = bytes((t, 3, 3)) + len(data).to_bytes(2, "big") + data
        self._send(rec)

    def _send(self, data):
        mv = memoryview(data)
        sock = self.sock
        if self._nb:
            sock.settimeout(self._timeout)
        try:
            while mv:
                try:
                    k = sock.write(mv)
                except OSError as e:
                    raise _io_error(e, "send") from None
                if not k:
                    raise fail(None, "could not send to the server in %d s" % self._timeout,
                                TIMEOUT)
                mv = mv[k:]
        finally:
            if self._nb:
                sock.setblocking(False)

    def _pump(self):
        # Read towards one whole record: True when it is there, None when a non-blocking socket
        # has no more data yet (a blocking one raises TIMEOUT).
        sock = self.sock
        while True:
            if self._hn < 5:
                buf, off, want = self._hdr, self._hn, 5
            else:
                buf, off, want = self._body, self._bn, len(self._body)
            if off == want:
                return True
            try:
                k = sock.readinto(memoryview(buf)[off:want])
            except OSError as e:
                if e.errno in (11, 110) and self._nb:  # EAGAIN, ETIMEDOUT
                    return None
                raise _io_error(e, "receive") from None
            if k is None:
                if self._nb:
                    return None
                raise fail(None, "no data from the server in %d s" % self._timeout, TIMEOUT)
            if k == 0:
                self._closed = True
                raise fail(None, "the server closed the connection%s" % (
                    "" if self._hn == 0 else " inside a record"), CLOSED)
            if self._hn < 5:
                self._hn += k
                if self._hn == 5:
                    h = self._hdr
                    if h[0] not in (_CCS, _ALERT, HS, _APP) or h[1] != 3:
                        raise fail(UNEXPECTED_MESSAGE if h[1] == 3 else PROTOCOL_VERSION,
                                    "not a TLS record from the server (bytes %s)" % (
                                        bytes(h).hex()), SERVER)
                    n = u16(h, 3)
                    if n > (_MAX_CIPHER if self._rc else _MAX_PLAIN):
                        raise fail(RECORD_OVERFLOW, "record of %d bytes: over the 16 KB bound"
                                    % n, SERVER)
                    self._body = bytearray(n)
                    self._bn = 0
            else:
                self._bn += k

    def read_record(self):
        # (type, plaintext) of the next record; alerts are handled here
        while True:
            if self._pump() is None:
                return None, None
            t = self._hdr[0]
            body = self._body
            self._hn = 0
            self._body = None
            if self._rc:
                body = self._rc.open(self._rseq.to_bytes(8, "big"), t, memoryview(body))
                if len(body) > _MAX_PLAIN:
                    raise fail(RECORD_OVERFLOW, "record over 16 KB once decrypted", SERVER)
            self._rseq += 1
            if t == _ALERT:
                self._alert(body)
                continue
            if not body and t != _APP:
                raise fail(UNEXPECTED_MESSAGE, "empty record of type %d" % t, SERVER)
            return t, body

    def _alert(self, body):
        if len(body) != 2:
            raise fail(DECODE_ERROR, "malformed alert", SERVER)
        level, desc = body[0], body[1]
        if desc == CLOSE_NOTIFY:
            self._closed = True
            e = fail(None, "the server closed the TLS session (close_notify)", CLOSED)
            e.received = True
            raise e
        if level == 1 and desc != NO_RENEGOTIATION:
            return  # a warning: go on (RFC 5246 §7.2)
        try:
            from upcert.diagnose import alert_name  # loaded on a failure only

            name = alert_name(desc)
        except MemoryError:
            name = "?"
        e = fail(None, "the server sent alert %d (%s)" % (desc, name), SERVER)
        e.alert = desc
        e.received = True
        self._closed = True
        raise e

    def abort(self, alert, level=2):
        # the alert (best effort; fatal unless close() says otherwise), then the socket closed
        if alert is not None and not self._closed:
            try:
                self.sock.settimeout(2)
                self.record(_ALERT, bytes((level, alert)))
            except Exception:
                pass
        self._closed = True
        self._rc = self._wc = None
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- the socket-like face -------------------------------------------------------------
    def _app(self):
        # more application data into self._plain: True, or None (non-blocking, nothing yet)
        while not self._plain:
            try:
                t, body = self.read_record()
            except TlsError as e:
                if e.received and e.alert is None:  # close_notify: the end of the stream
                    return False
                self.abort(e.alert)
                raise
            if t is None:
                return None
            if t == _APP:
                self._plain = body
            elif t == HS:
                # HelloRequest or anything else after the handshake: no renegotiation
                self.abort(NO_RENEGOTIATION)
                raise fail(NO_RENEGOTIATION, "the server asked to renegotiate: refused (a "
                            "device has no use for it)", SERVER)
            else:
                self.abort(UNEXPECTED_MESSAGE)
                raise fail(UNEXPECTED_MESSAGE, "record type %d after the handshake" % t, SERVER)
        return True

    def read(self, n=-1):
        if self._closed and not self._plain:
            return b""
        got = self._app()
        if got is None:
            return None
        if not got:
            return b""
        p = self._plain
        if n < 0 or n >= len(p):
            self._plain = b""
            return bytes(p)
        self._plain = p[n:]
        return bytes(p[:n])

    def readinto(self, buf, n=-1):
        d = self.read(len(buf) if n < 0 else min(n, len(buf)))
        if d is None:
            return None
        buf[: len(d)] = d
        return len(d)

    def write(self, data, n=-1):
        if self._closed:
            raise fail(None, "the TLS session is closed", CLOSED)
        mv = memoryview(data)
        if n >= 0:
            mv = mv[:n]
        total = len(mv)
        try:
            while mv:
                self.record(_APP, bytes(mv[:_SEND_MAX]))
                mv = mv[_SEND_MAX:]
        except TlsError:
            self.abort(None)
            raise
        return total

    def setblocking(self, flag):
        self._nb = not flag
        if flag:
            self.sock.settimeout(self._timeout)
        else:
            self.sock.setblocking(False)

    def settimeout(self, s):
        if s is None:
            self.setblocking(True)
            return
        self._timeout = s
        self._nb = s == 0
        self.sock.settimeout(s)

    def cipher(self):
        s = SUITES.get(self.suite)
        if s is None:
            return None, "TLSv1.2"
        return "TLS-ECDHE-%s-WITH-AES-128-%s-SHA256" % ("ECDSA" if s[0] == "EC" else "RSA",
                                                       "GCM" if s[1] else "CBC"), "TLSv1.2"

    def close(self):
        self.abort(CLOSE_NOTIFY, 1)  # close_notify is a warning-level alert (§7.2.1)



def _io_error(e, what):
    code = e.errno if hasattr(e, "errno") else e.args[0]
    if code in (11, 110):  # EAGAIN, ETIMEDOUT
        return fail(None, "%s timed out" % what, TIMEOUT)
    if code in (104, 32):  # ECONNRESET, EPIPE
        return fail(None, "the server reset the connection", CLOSED)
    return fail(None, "%s failed: %s" % (what, e), CLOSED)
