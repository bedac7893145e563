# The first part of upcert's TLS 1.2 handshake (RFC 5246 §7.4.1-7.4.2): ClientHello, the
# server's ServerHello and Certificate. Loaded by tls12.TlsClient for that part only.
import hashlib
import os

from micropython import const

from upcert.errors import SERVER
from upcert.tls12rec import (
    BAD_CERTIFICATE,
    DECODE_ERROR,
    HANDSHAKE_FAILURE,
    ILLEGAL_PARAMETER,
    PROTOCOL_VERSION,
    SUITES,
    UNEXPECTED_MESSAGE,
    UNSUPPORTED_EXTENSION,
    Reader,
    fail,
)

_CLIENT_HELLO = const(1)  # handshake types (§7.4)
_SERVER_HELLO = const(2)
_CERTIFICATE = const(11)
# extensions
_EXT_SNI = const(0)
_EXT_GROUPS = const(10)
_EXT_POINT_FORMATS = const(11)
_EXT_SIG_ALGS = const(13)
_EXT_ALPN = const(16)
_EXT_EMS = const(23)
_EXT_RENEGO = const(0xFF01)
# what we verify in ServerKeyExchange and accept in the chain: ECDSA P-256 (SHA-256, SHA-384),
# RSA-PSS (rsae, RFC 8446 §4.2.3) and PKCS#1 v1.5, each with SHA-256/384/512 (sigs.scheme())
_SIG_ALGS = (0x0403, 0x0503, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601)
_SECP256R1 = const(23)
_ORDER = (0xC02B, 0xC02F, 0xC023, 0xC027)  # the suites offered, in this order


def hello(tc, host, alpn):
    """ClientHello out, ServerHello and the server's Certificate in, over tc (a
    tls12rec.Record): (client random, server random, extended master secret agreed?, the
    certificates, leaf first, as views into the message). Sets tc.suite and tc.alpn."""
    tc._th = [hashlib.sha256(), hashlib.sha256(), hashlib.sha256()]
    # every handshake message goes into all three (no copy() in hashlib): the transcript up to
    # ClientKeyExchange, up to CertificateVerify, up to the client's Finished
    crandom = os.urandom(32)
    tc.send_hs(_CLIENT_HELLO, _client_hello(crandom, host, alpn))
    t, m = tc.next_hs()
    if t != _SERVER_HELLO:
        raise fail(UNEXPECTED_MESSAGE, "expected ServerHello, got handshake type %d" % t)
    srandom, ems = _server_hello(tc, m, alpn)
    t, m = tc.next_hs()
    if t != _CERTIFICATE:
        raise fail(UNEXPECTED_MESSAGE, "expected the server's Certificate, got type %d" % t)
    r = Reader(m, "Certificate")
    lst = Reader(r.vec(3), "certificate_list")
    r.end()
    certs = []
    while lst.i < len(lst.b):
        certs.append(lst.vec(3))
    if not certs:
        raise fail(BAD_CERTIFICATE, "the server sent no certificate", SERVER)
    return crandom, srandom, ems, certs


def _vec(n, data):
    # a TLS vector: n-byte length, then the data (§4.3)
    return len(data).to_bytes(n, "big") + data


def _ext(kind, body):
    return kind.to_bytes(2, "big") + _vec(2, body)


def _is_ip(host):
    return host.replace(".", "").isdigit() or ":" in host


def _client_hello(crandom, host, alpn):
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

def _server_hello(tc, m, alpn):
    r = Reader(m, "ServerHello")
    if r.u16() != 0x0303:
        raise fail(PROTOCOL_VERSION, "the server does not speak TLS 1.2", SERVER)
    srandom = bytes(r.take(32))
    r.vec(1)  # session id: we never resume
    suite = r.u16()
    if suite not in SUITES:
        raise fail(ILLEGAL_PARAMETER, "the server chose suite 0x%04x, which we did not offer"
                    % suite, SERVER)
    if r.u8() != 0:
        raise fail(ILLEGAL_PARAMETER, "the server chose compression, which we did not offer")
    ems = False
    chosen = None
    if r.i < len(m):
        ext = Reader(r.vec(2), "ServerHello extensions")
        r.end()
        seen = []
        while ext.i < len(ext.b):
            kind = ext.u16()
            body = ext.vec(2)
            if kind in seen:
                raise fail(DECODE_ERROR, "ServerHello repeats extension %d" % kind)
            seen.append(kind)
            if kind == _EXT_EMS:
                ems = True
            elif kind == _EXT_RENEGO:
                if bytes(body) != b"\x00":  # RFC 5746 §3.4: empty on an initial handshake
                    raise fail(HANDSHAKE_FAILURE, "bad renegotiation_info from the server")
                # (without it a server may be open to renegotiation attacks, RFC 5746 §4.1;
                # we never renegotiate, so its absence changes nothing here)
            elif kind == _EXT_ALPN:
                a = Reader(body, "ALPN")
                names = Reader(a.vec(2), "ALPN list")
                a.end()
                chosen = bytes(names.vec(1))
                names.end()
                if not alpn or chosen not in alpn:
                    raise fail(ILLEGAL_PARAMETER, "the server chose ALPN %r, which we did "
                                "not offer" % chosen, SERVER)
            elif kind not in (_EXT_SNI, _EXT_POINT_FORMATS):
                raise fail(UNSUPPORTED_EXTENSION, "the server sent extension %d, which we "
                            "did not offer" % kind, SERVER)
    else:
        r.end()
    # A server that answers no ALPN is let through (RFC 7301 §3.2 allows it, and AWS's
    # port 443 has already routed on the protocol we offered); one we did not offer is not.
    tc.suite = suite
    tc.alpn = chosen
    return srandom, ems
