# upcert's own TLS 1.2 client (RFC 5246) for stock MicroPython: the key may stay in a secure
# element (every private-key operation goes through a signer), and ALPN (RFC 7301) is offered
# for AWS IoT's port 443. In C it uses only what the stock ESP32 port has: cryptolib AES
# (ECB, CBC), hashlib SHA-256, os.urandom and sockets; GCM, HMAC, the PRF, P-256, RSA and the
# certificate chain are MicroPython (gcm.py, hmac256.py, p256.py, rsa.py, chain.py).
#
# Suites, AWS IoT's TLS 1.2 list in this order ("Transport security in AWS IoT Core"):
# ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES128-SHA256,
# ECDHE-RSA-AES128-SHA256; ECDHE on P-256 only (RFC 8422). Client certificate with
# CertificateVerify (ecdsa_secp256r1_sha256), extended master secret (RFC 7627), secure
# renegotiation indication (RFC 5746) but no renegotiation, SNI (RFC 6066).
import hashlib
import os

from micropython import const

from upcert.errors import CLOSED, PROTOCOL, REFUSED, SERVER, TIMEOUT, UpcertError

# record content types (RFC 5246 §6.2.1)
_CCS = const(20)
_ALERT = const(21)
_HS = const(22)
_APP = const(23)
# handshake types (§7.4)
_HELLO_REQUEST = const(0)
_CLIENT_HELLO = const(1)
_SERVER_HELLO = const(2)
_CERTIFICATE = const(11)
_SERVER_KX = const(12)
_CERT_REQUEST = const(13)
_HELLO_DONE = const(14)
_CERT_VERIFY = const(15)
_CLIENT_KX = const(16)
_FINISHED = const(20)
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
# extensions
_EXT_SNI = const(0)
_EXT_GROUPS = const(10)
_EXT_POINT_FORMATS = const(11)
_EXT_SIG_ALGS = const(13)
_EXT_ALPN = const(16)
_EXT_EMS = const(23)
_EXT_RENEGO = const(0xFF01)
# SignatureScheme values (RFC 8446 §4.2.3, same code points as TLS 1.2's (hash, signature))
_ECDSA_SHA256 = const(0x0403)
# what we verify in ServerKeyExchange and accept in the chain: ECDSA P-256 (SHA-256, SHA-384),
# RSA-PSS (rsae, RFC 8446 §4.2.3) and PKCS#1 v1.5, each with SHA-256/384/512
_SIG_ALGS = (0x0403, 0x0503, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601)
_SECP256R1 = const(23)
# suite -> (server key type, GCM?)
SUITES = {0xC02B: ("EC", True), 0xC02F: ("RSA", True), 0xC023: ("EC", False), 0xC027: ("RSA", False)}
_ORDER = (0xC02B, 0xC02F, 0xC023, 0xC027)
NAMES = {
    0xC02B: "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
    0xC02F: "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
    0xC023: "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256",
    0xC027: "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256",
}
_MAX_PLAIN = const(16384)  # 2^14 (§6.2.1)
_MAX_CIPHER = const(18432)  # 2^14 + 2048 (§6.2.3)
_MAX_HS = const(24576)  # one handshake message (a certificate chain) at most
_SEND_MAX = const(4096)  # plaintext per record we send


class TlsError(UpcertError):
    """The TLS connection failed or was refused: .alert is the alert sent or received (or
    None), .received says which; .reason one of upcert.errors' codes."""

    alert = None
    received = False


def _u16(b, i):
    return b[i] << 8 | b[i + 1]


def _u24(b, i):
    return b[i] << 16 | b[i + 1] << 8 | b[i + 2]


def _vec(n, data):
    # a TLS vector: n-byte length, then the data (§4.3)
    return len(data).to_bytes(n, "big") + data


def _ext(kind, body):
    return kind.to_bytes(2, "big") + _vec(2, body)


class _Reader:
    """Bounds-checked reads in one handshake message; any overrun is a decode_error."""

    def __init__(self, data, what):
        self.b = data
        self.i = 0
        self.what = what

    def need(self, n):
        if self.i + n > len(self.b):
            raise _fail(DECODE_ERROR, "%s: truncated" % self.what)
        i = self.i
        self.i += n
        return i

    def u8(self):
        return self.b[self.need(1)]

    def u16(self):
        return _u16(self.b, self.need(2))

    def u24(self):
        return _u24(self.b, self.need(3))

    def take(self, n):
        i = self.need(n)
        return self.b[i : i + n]

    def vec(self, n):
        k = self.u8() if n == 1 else self.u16() if n == 2 else self.u24()
        return self.take(k)

    def end(self):
        if self.i != len(self.b):
            raise _fail(DECODE_ERROR, "%s: %d bytes too many" % (self.what, len(self.b) - self.i))


def _fail(alert, message, reason=PROTOCOL):
    e = TlsError(message, reason)
    e.alert = alert
    return e


class _Gcm:
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
            raise _fail(BAD_RECORD_MAC, "record too short for AES-GCM", SERVER)
        aad = seq8 + bytes((ctype, 3, 3)) + n.to_bytes(2, "big")
        try:
            return self.g.open(self.salt + bytes(payload[:8]), aad, payload[8:])
        except ValueError:
            raise _fail(BAD_RECORD_MAC, "record failed its AES-GCM tag check", SERVER) from None


class _Cbc:
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
            raise _fail(BAD_RECORD_MAC, "record failed its MAC check (AES-CBC)", SERVER) from None


def connector(config, store, clock, cert, key, roots, chip):
    """connect(host, port) with this client for the agent (app._connector): the chip's signer
    (key None: the active identity; else a key reference, e.g. a staged one), else the key's
    DER (a p256.Key is made for each handshake only), ALPN from config["alpn"]."""
    if chip:
        signer = store.signer(key)
    else:
        signer = store.signer() if key is None else bytes(key)
    if signer is None:
        from upcert.errors import StoreError

        raise StoreError("%s holds neither a private key nor a signer: run `upcert provision`"
                         % store.location)
    alpn = [n.encode() for n in config["alpn"]] or None
    return Connector(cert, signer, roots, clock, alpn).connect


class Connector:
    """connect(host, port) -> TlsClient, as tlsconn.Connector does for the built-in tls module:
    DNS, TCP with a timeout, then this module's handshake with the identity (certificate DER,
    signer). clock: now(), trusted(). Failures close the socket and raise ConnectError or
    TlsError naming the cause; the chain's readers leave RAM after each handshake."""

    def __init__(self, cert, signer, roots, clock, alpn=None, timeout_s=15):
        self.identity = (cert, signer)
        self.roots = roots
        self.clock = clock
        self.alpn = alpn
        self.timeout_s = timeout_s

    def connect(self, host, port):
        from upcert import drop
        from upcert.tlsconn import tcp

        sock = tcp(host, port, self.timeout_s)
        try:
            return TlsClient(sock, host, self.roots, self.clock.now(), self.identity, self.alpn,
                             self.timeout_s, self.clock.trusted())
        finally:
            # loaded for the server's chain and the key exchange; hmac256 for the PRF (a CBC
            # suite's MAC keeps its own reference)
            drop("chain", "rsa", "sha512", "x509", "der", "p256", "derw", "hmac256")


class TlsClient:
    """A TLS 1.2 connection over a connected TCP socket, socket-like for upcert.mqtt: read(n),
    readinto(buf, n), write(buf), setblocking(flag), settimeout(s), close(), cipher().

    TlsClient(sock, host, roots, now, identity, alpn=None, timeout_s=15, trusted=True):
    roots: DER trust anchors; now: seconds (port epoch) to judge validity by; identity:
    (certificate DER, signer) where the signer has sign_digest(digest32) -> (r, s) (p256.Key,
    atecc.Signer) and may have ecdhe(peer_point65) -> (our_point65, shared_x32) (atecc.Signer:
    the ephemeral key stays in the chip; else p256.ecdhe makes one), or is the P-256 key's DER
    (bytes: a p256.Key is made for the handshake only, so p256 is not resident between);
    alpn: protocol names (bytes) to offer, the server must pick one. The handshake runs in the
    constructor; a failure sends the alert, closes the socket and raises TlsError.
    """

    tls = "upcert"  # which TLS client: telemetry says so (the tls module's sockets: "builtin")

    def __init__(self, sock, host, roots, now, identity, alpn=None, timeout_s=15, trusted=True):
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
        self._closed = False
        self.suite = None
        self.alpn = None
        sock.settimeout(timeout_s)
        try:
            self._handshake(host, roots, now, identity, alpn, trusted)
        except TlsError as e:
            self._abort(None if e.received else e.alert)  # never echo the server's own alert
            if e.received:  # the server refused the handshake: our certificate, most likely
                e.reason = REFUSED
            raise
        except MemoryError:
            self._abort(INTERNAL_ERROR)
            raise
        except Exception as e:
            self._abort(INTERNAL_ERROR)
            raise _fail(INTERNAL_ERROR, "TLS handshake: %s" % (e,)) from None
        self._hs = None

    # ---- handshake -----------------------------------------------------------------------
    def _handshake(self, host, roots, now, identity, alpn, trusted):
        cert_der, signer = identity
        hashes = [hashlib.sha256(), hashlib.sha256(), hashlib.sha256()]
        self._th = hashes  # every handshake message goes into all three (no copy() in hashlib)
        crandom = os.urandom(32)
        self._send_hs(_CLIENT_HELLO, self._client_hello(crandom, host, alpn))
        t, m = self._next_hs()
        if t != _SERVER_HELLO:
            raise _fail(UNEXPECTED_MESSAGE, "expected ServerHello, got handshake type %d" % t)
        srandom, ems = self._server_hello(m, alpn)
        gcm = SUITES[self.suite][1]
        t, m = self._next_hs()
        if t != _CERTIFICATE:
            raise _fail(UNEXPECTED_MESSAGE, "expected the server's Certificate, got type %d" % t)
        leaf = self._server_certs(m, host, roots, now, trusted)
        t, m = self._next_hs()
        if t != _SERVER_KX:
            raise _fail(UNEXPECTED_MESSAGE, "expected ServerKeyExchange, got type %d" % t)
        peer = self._server_kx(m, leaf, crandom, srandom)
        leaf = None
        from upcert import drop

        # The chain's readers are done: out of RAM before the key exchange (the handshake's
        # peak heap is the larger of the two halves, not their sum).
        drop("chain", "rsa", "sha512", "x509", "der")
        t, m = self._next_hs()
        asked = t == _CERT_REQUEST
        if asked:
            self._cert_request(m)
            t, m = self._next_hs()
        if t != _HELLO_DONE:
            raise _fail(UNEXPECTED_MESSAGE, "expected ServerHelloDone, got type %d" % t)
        if not asked:
            # AWS IoT and our stand-in always ask; a server that does not would let anyone in
            raise _fail(HANDSHAKE_FAILURE, "the server did not ask for our certificate", SERVER)
        self._send_hs(_CERTIFICATE, _vec(3, _vec(3, cert_der)))
        if type(signer) is bytes:  # a software key (DER): a p256.Key for this handshake only
            from upcert.p256 import Key

            signer = Key.from_der(signer)
        if hasattr(signer, "ecdhe"):  # a secure element: its own ephemeral key, in the chip
            ours, pms = signer.ecdhe(peer)
        else:
            from upcert.p256 import ecdhe

            ours, pms = ecdhe(peer)
        del peer
        self._send_hs(_CLIENT_KX, _vec(1, ours))
        h = hashes.pop(0).digest()  # the messages up to ClientKeyExchange
        from upcert.hmac256 import prf

        if ems:  # RFC 7627 §4: the session hash instead of the randoms
            master = prf(pms, b"extended master secret", h, 48)
        else:
            master = prf(pms, b"master secret", crandom + srandom, 48)
        del pms
        # CertificateVerify (§7.4.8): ECDSA over the same transcript, DER-encoded
        r, s = signer.sign_digest(h)
        signer = None
        drop("p256", "derw", "der")  # a software key's code: not needed again until next time
        self._send_hs(_CERT_VERIFY, _ECDSA_SHA256.to_bytes(2, "big") + _vec(2, _ecdsa_der(r, s)))
        kb = prf(master, b"key expansion", srandom + crandom, 40 if gcm else 96)
        if gcm:
            wc, rc = _Gcm(kb[0:16], kb[32:36]), _Gcm(kb[16:32], kb[36:40])
        else:
            wc, rc = _Cbc(kb[64:80], kb[0:32]), _Cbc(kb[80:96], kb[32:64])
        del kb
        self._record(_CCS, b"\x01")
        self._wc, self._wseq = wc, 0
        fin = prf(master, b"client finished", hashes.pop(0).digest(), 12)
        self._send_hs(_FINISHED, fin)
        want = prf(master, b"server finished", hashes.pop(0).digest(), 12)
        self._th = None
        del master
        t, body = self._read_record()
        if t != _CCS or bytes(body) != b"\x01":
            raise _fail(UNEXPECTED_MESSAGE, "expected the server's ChangeCipherSpec")
        self._rc, self._rseq = rc, 0
        t, m = self._next_hs()
        if t != _FINISHED or len(m) != 12:
            raise _fail(UNEXPECTED_MESSAGE, "expected the server's Finished")
        diff = 0
        for i in range(12):  # constant-shape compare
            diff |= m[i] ^ want[i]
        if diff:
            raise _fail(DECRYPT_ERROR, "the server's Finished does not match the handshake", SERVER)
        if self._hs:
            raise _fail(UNEXPECTED_MESSAGE, "handshake data after the server's Finished")

    def _client_hello(self, crandom, host, alpn):
        suites = b"".join(s.to_bytes(2, "big") for s in _ORDER)
        ext = b""
        if host and not _is_ip(host):  # RFC 6066 §3: no IP literals in SNI
            name = host.encode()
            ext += _ext(_EXT_SNI, _vec(2, b"\x00" + _vec(2, name)))
        ext += _ext(_EXT_GROUPS, _vec(2, _SECP256R1.to_bytes(2, "big")))
        ext += _ext(_EXT_POINT_FORMATS, b"\x01\x00")  # uncompressed only (RFC 8422 §5.1.2)
        ext += _ext(_EXT_SIG_ALGS, _vec(2, b"".join(a.to_bytes(2, "big") for a in _SIG_ALGS)))
        if alpn:
            ext += _ext(_EXT_ALPN, _vec(2, b"".join(_vec(1, p) for p in alpn)))
        ext += _ext(_EXT_EMS, b"")
        ext += _ext(_EXT_RENEGO, b"\x00")  # empty renegotiated_connection (RFC 5746 §3.4)
        return b"\x03\x03" + crandom + b"\x00" + _vec(2, suites) + b"\x01\x00" + _vec(2, ext)

    def _server_hello(self, m, alpn):
        r = _Reader(m, "ServerHello")
        if r.u16() != 0x0303:
            raise _fail(PROTOCOL_VERSION, "the server does not speak TLS 1.2", SERVER)
        srandom = bytes(r.take(32))
        r.vec(1)  # session id: we never resume
        suite = r.u16()
        if suite not in SUITES:
            raise _fail(ILLEGAL_PARAMETER, "the server chose suite 0x%04x, which we did not offer"
                        % suite, SERVER)
        if r.u8() != 0:
            raise _fail(ILLEGAL_PARAMETER, "the server chose compression, which we did not offer")
        ems = False
        chosen = None
        if r.i < len(m):
            ext = _Reader(r.vec(2), "ServerHello extensions")
            r.end()
            seen = []
            while ext.i < len(ext.b):
                kind = ext.u16()
                body = ext.vec(2)
                if kind in seen:
                    raise _fail(DECODE_ERROR, "ServerHello repeats extension %d" % kind)
                seen.append(kind)
                if kind == _EXT_EMS:
                    ems = True
                elif kind == _EXT_RENEGO:
                    if bytes(body) != b"\x00":  # RFC 5746 §3.4: empty on an initial handshake
                        raise _fail(HANDSHAKE_FAILURE, "bad renegotiation_info from the server")
                    # (without it a server may be open to renegotiation attacks, RFC 5746 §4.1;
                    # we never renegotiate, so its absence changes nothing here)
                elif kind == _EXT_ALPN:
                    a = _Reader(body, "ALPN")
                    names = _Reader(a.vec(2), "ALPN list")
                    a.end()
                    chosen = bytes(names.vec(1))
                    names.end()
                    if not alpn or chosen not in alpn:
                        raise _fail(ILLEGAL_PARAMETER, "the server chose ALPN %r, which we did "
                                    "not offer" % chosen, SERVER)
                elif kind not in (_EXT_SNI, _EXT_POINT_FORMATS):
                    raise _fail(UNSUPPORTED_EXTENSION, "the server sent extension %d, which we "
                                "did not offer" % kind, SERVER)
        else:
            r.end()
        # A server that answers no ALPN is let through (RFC 7301 §3.2 allows it, and AWS's
        # port 443 has already routed on the protocol we offered); one we did not offer is not.
        self.suite = suite
        self.alpn = chosen
        return srandom, ems

    def _server_certs(self, m, host, roots, now, trusted):
        r = _Reader(m, "Certificate")
        lst = _Reader(r.vec(3), "certificate_list")
        r.end()
        chain = []
        while lst.i < len(lst.b):
            chain.append(lst.vec(3))
        if not chain:
            raise _fail(BAD_CERTIFICATE, "the server sent no certificate", SERVER)
        from upcert import chain as ch

        try:
            leaf = ch.verify(chain, roots, host, now, trusted)
        except ch.ChainError as e:
            raise _fail(e.alert, "server certificate: %s" % e, SERVER) from None
        want = SUITES[self.suite][0]
        if leaf.key_type != want:
            raise _fail(ILLEGAL_PARAMETER, "the suite needs an %s server key, the certificate "
                        "has %s" % (want, leaf.key_type), SERVER)
        return leaf

    def _server_kx(self, m, leaf, crandom, srandom):
        # ECDHE ServerKeyExchange (RFC 8422 §5.4): ECParameters, ECPoint, signature
        r = _Reader(m, "ServerKeyExchange")
        if r.u8() != 3 or r.u16() != _SECP256R1:  # named_curve secp256r1
            raise _fail(ILLEGAL_PARAMETER, "the server's ECDHE group is not P-256", SERVER)
        point = bytes(r.vec(1))
        params = bytes(m[: r.i])
        alg = r.u16()
        sig = bytes(r.vec(2))
        r.end()
        if len(point) != 65 or point[0] != 4:
            raise _fail(ILLEGAL_PARAMETER, "the server's ECDHE point is not uncompressed P-256")
        if alg not in _SIG_ALGS:
            raise _fail(ILLEGAL_PARAMETER, "ServerKeyExchange signed with 0x%04x, which we did "
                        "not offer" % alg, SERVER)
        from upcert import chain as ch

        try:
            ok = ch.verify_signed(leaf, alg, crandom + srandom + params, sig)
        except ch.ChainError as e:
            raise _fail(e.alert, "ServerKeyExchange: %s" % e, SERVER) from None
        if not ok:
            raise _fail(DECRYPT_ERROR, "ServerKeyExchange signature does not verify with the "
                        "server's certificate", SERVER)
        return point

    def _cert_request(self, m):
        r = _Reader(m, "CertificateRequest")
        types = bytes(r.vec(1))
        algs = r.vec(2)
        r.vec(2)  # certificate_authorities: we have one certificate anyway
        r.end()
        if 64 not in types:  # ecdsa_sign (RFC 8422 §5.5)
            raise _fail(HANDSHAKE_FAILURE, "the server does not take ECDSA client certificates",
                        SERVER)
        for i in range(0, len(algs) - 1, 2):
            if _u16(algs, i) == _ECDSA_SHA256:
                return
        raise _fail(HANDSHAKE_FAILURE, "the server does not take ecdsa_secp256r1_sha256 "
                    "signatures from clients", SERVER)

    def _send_hs(self, t, body):
        msg = bytes((t,)) + len(body).to_bytes(3, "big") + body
        for h in self._th:
            h.update(msg)
        self._record(_HS, msg)

    def _next_hs(self):
        # the next handshake message (type, body); messages may span records (§6.2.1)
        while True:
            hs = self._hs
            if len(hs) >= 4:
                n = _u24(hs, 1)
                if n > _MAX_HS:
                    raise _fail(RECORD_OVERFLOW, "handshake message of %d bytes" % n, SERVER)
                if len(hs) >= 4 + n:
                    msg = hs[: 4 + n]
                    self._hs = hs[4 + n :]
                    if msg[0] == _HELLO_REQUEST:
                        continue  # §7.4.1.1: ignored during a handshake, never hashed
                    for h in self._th or ():
                        h.update(msg)
                    return msg[0], memoryview(msg)[4:]
            t, body = self._read_record()
            if t != _HS:
                raise _fail(UNEXPECTED_MESSAGE, "expected a handshake record, got type %d" % t)
            self._hs = hs + bytes(body) if hs else bytes(body)

    # ---- records --------------------------------------------------------------------------
    def _record(self, t, data):
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
                    raise _fail(None, "could not send to the server in %d s" % self._timeout,
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
                raise _fail(None, "no data from the server in %d s" % self._timeout, TIMEOUT)
            if k == 0:
                self._closed = True
                raise _fail(None, "the server closed the connection%s" % (
                    "" if self._hn == 0 else " inside a record"), CLOSED)
            if self._hn < 5:
                self._hn += k
                if self._hn == 5:
                    h = self._hdr
                    if h[0] not in (_CCS, _ALERT, _HS, _APP) or h[1] != 3:
                        raise _fail(UNEXPECTED_MESSAGE if h[1] == 3 else PROTOCOL_VERSION,
                                    "not a TLS record from the server (bytes %s)" % (
                                        bytes(h).hex()), SERVER)
                    n = _u16(h, 3)
                    if n > (_MAX_CIPHER if self._rc else _MAX_PLAIN):
                        raise _fail(RECORD_OVERFLOW, "record of %d bytes: over the 16 KB bound"
                                    % n, SERVER)
                    self._body = bytearray(n)
                    self._bn = 0
            else:
                self._bn += k

    def _read_record(self):
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
                    raise _fail(RECORD_OVERFLOW, "record over 16 KB once decrypted", SERVER)
            self._rseq += 1
            if t == _ALERT:
                self._alert(body)
                continue
            if not body and t != _APP:
                raise _fail(UNEXPECTED_MESSAGE, "empty record of type %d" % t, SERVER)
            return t, body

    def _alert(self, body):
        if len(body) != 2:
            raise _fail(DECODE_ERROR, "malformed alert", SERVER)
        level, desc = body[0], body[1]
        if desc == CLOSE_NOTIFY:
            self._closed = True
            e = _fail(None, "the server closed the TLS session (close_notify)", CLOSED)
            e.received = True
            raise e
        if level == 1 and desc != NO_RENEGOTIATION:
            return  # a warning: go on (RFC 5246 §7.2)
        e = _fail(None, "the server sent alert %d (%s)" % (desc, _alert_name(desc)), SERVER)
        e.alert = desc
        e.received = True
        self._closed = True
        raise e

    def _abort(self, alert, level=2):
        # the alert (best effort; fatal unless close() says otherwise), then the socket closed
        if alert is not None and not self._closed:
            try:
                self.sock.settimeout(2)
                self._record(_ALERT, bytes((level, alert)))
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
                t, body = self._read_record()
            except TlsError as e:
                if e.received and e.alert is None:  # close_notify: the end of the stream
                    return False
                self._abort(e.alert)
                raise
            if t is None:
                return None
            if t == _APP:
                self._plain = body
            elif t == _HS:
                # HelloRequest or anything else after the handshake: no renegotiation
                self._abort(NO_RENEGOTIATION)
                raise _fail(NO_RENEGOTIATION, "the server asked to renegotiate: refused (a "
                            "device has no use for it)", SERVER)
            else:
                self._abort(UNEXPECTED_MESSAGE)
                raise _fail(UNEXPECTED_MESSAGE, "record type %d after the handshake" % t, SERVER)
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
            raise _fail(None, "the TLS session is closed", CLOSED)
        mv = memoryview(data)
        if n >= 0:
            mv = mv[:n]
        total = len(mv)
        try:
            while mv:
                self._record(_APP, bytes(mv[:_SEND_MAX]))
                mv = mv[_SEND_MAX:]
        except TlsError:
            self._abort(None)
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
        return NAMES.get(self.suite), "TLSv1.2"

    def close(self):
        self._abort(CLOSE_NOTIFY, 1)  # close_notify is a warning-level alert (§7.2.1)


def _ecdsa_der(r, s):
    # ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } (RFC 3279 §2.2.3), each < 2^256
    body = b""
    for v in (r, s):
        b = v.to_bytes(33, "big")  # a leading zero keeps it positive
        i = 0
        while i < 32 and b[i] == 0 and b[i + 1] < 0x80:
            i += 1
        body += bytes((2, 33 - i)) + b[i:]
    return bytes((0x30, len(body))) + body


def _is_ip(host):
    return host.replace(".", "").isdigit() or ":" in host


def _io_error(e, what):
    code = e.errno if hasattr(e, "errno") else e.args[0]
    if code in (11, 110):  # EAGAIN, ETIMEDOUT
        return _fail(None, "%s timed out" % what, TIMEOUT)
    if code in (104, 32):  # ECONNRESET, EPIPE
        return _fail(None, "the server reset the connection", CLOSED)
    return _fail(None, "%s failed: %s" % (what, e), CLOSED)


def _alert_name(desc):
    return {
        10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
        40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
        44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
        47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
        51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security",
        80: "internal_error", 90: "user_canceled", 100: "no_renegotiation",
        110: "unsupported_extension", 120: "no_application_protocol",
    }.get(desc, "unknown")
