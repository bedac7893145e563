# The second part of upcert's TLS 1.2 handshake (RFC 5246 §7.4.3-7.4.9, RFC 8422): the
# signatures of the server's certificates and of its ServerKeyExchange (sigs.py), the
# CertificateRequest, our Certificate, ECDHE, CertificateVerify, the keys and both Finished.
# Loaded by tls12.TlsClient for that part only, after chain.py has left RAM.
from micropython import const

from upcert import drop
from upcert.errors import SERVER, CertificateError
from upcert.tls12rec import (
    DECRYPT_ERROR,
    HANDSHAKE_FAILURE,
    ILLEGAL_PARAMETER,
    SUITES,
    UNEXPECTED_MESSAGE,
    Cbc,
    Gcm,
    Reader,
    fail,
    u16,
)

_CCS = const(20)  # record content type (§6.2.1)
_SERVER_KX = const(12)  # handshake types (§7.4)
_CERT_REQUEST = const(13)
_HELLO_DONE = const(14)
_CERTIFICATE = const(11)
_CERT_VERIFY = const(15)
_CLIENT_KX = const(16)
_FINISHED = const(20)
_ECDSA_SHA256 = const(0x0403)  # SignatureScheme (RFC 8446 §4.2.3)
_SECP256R1 = const(23)
_UNSUPPORTED_CERTIFICATE = const(43)


def finish(tc, hello, leaf, todo, identity):
    """The handshake after the server's Certificate, over tc (a tls12.TlsClient): hello is
    (client random, server random, extended master secret?), leaf the server's key and todo
    the chain's signatures (chain.walk()), identity (certificate DER, signer) as TlsClient
    takes it. Installs the record protection both ways."""
    crandom, srandom, ems = hello
    want = SUITES[tc.suite][0]
    if leaf[0] != want:
        raise fail(ILLEGAL_PARAMETER, "the suite needs an %s server key, the certificate "
                   "has %s" % (want, leaf[0]), SERVER)
    peer = _signatures(tc, todo, leaf, crandom + srandom)
    todo = leaf = None  # the server's Certificate message may go now
    t, m = tc.next_hs()
    asked = t == _CERT_REQUEST
    if asked:
        _cert_request(m)
        t, m = tc.next_hs()
    if t != _HELLO_DONE:
        raise fail(UNEXPECTED_MESSAGE, "expected ServerHelloDone, got type %d" % t)
    if not asked:
        # AWS IoT and our stand-in always ask; a server that does not would let anyone in
        raise fail(HANDSHAKE_FAILURE, "the server did not ask for our certificate", SERVER)
    cert_der, signer = identity
    tc.send_hs(_CERTIFICATE, _vec3(_vec3(cert_der)))
    if type(signer) is bytes:  # a software key (its scalar, or DER): a p256.Key for now only
        signer = _key(signer)
    if hasattr(signer, "ecdhe"):  # a secure element: its own ephemeral key, in the chip
        ours, pms = signer.ecdhe(peer)
    else:
        ours, pms = _ecdhe(peer)
    del peer
    tc.send_hs(_CLIENT_KX, bytes((len(ours),)) + ours)
    hashes = tc._th
    h = hashes.pop(0).digest()  # the messages up to ClientKeyExchange
    from upcert.hmac256 import prf

    if ems:  # RFC 7627 §4: the session hash instead of the randoms
        master = prf(pms, b"extended master secret", h, 48)
    else:
        master = prf(pms, b"master secret", crandom + srandom, 48)
    del pms
    # CertificateVerify (§7.4.8): ECDSA over the same transcript, DER-encoded
    sig = _sign(signer, h)
    signer = None
    drop("p256", "derw", "der")  # a software key's code: not needed again until next time
    tc.send_hs(_CERT_VERIFY, _ECDSA_SHA256.to_bytes(2, "big") + len(sig).to_bytes(2, "big") + sig)
    gcm = SUITES[tc.suite][1]
    kb = prf(master, b"key expansion", srandom + crandom, 40 if gcm else 96)
    if gcm:
        wc, rc = Gcm(kb[0:16], kb[32:36]), Gcm(kb[16:32], kb[36:40])
    else:
        wc, rc = Cbc(kb[64:80], kb[0:32]), Cbc(kb[80:96], kb[32:64])
    del kb
    tc.record(_CCS, b"\x01")
    tc._wc, tc._wseq = wc, 0
    fin = prf(master, b"client finished", hashes.pop(0).digest(), 12)
    tc.send_hs(_FINISHED, fin)
    want = prf(master, b"server finished", hashes.pop(0).digest(), 12)
    tc._th = None
    del master
    t, body = tc.read_record()
    if t != _CCS or bytes(body) != b"\x01":
        raise fail(UNEXPECTED_MESSAGE, "expected the server's ChangeCipherSpec")
    tc._rc, tc._rseq = rc, 0
    t, m = tc.next_hs()
    if t != _FINISHED or len(m) != 12:
        raise fail(UNEXPECTED_MESSAGE, "expected the server's Finished")
    diff = 0
    for i in range(12):  # constant-shape compare
        diff |= m[i] ^ want[i]
    if diff:
        raise fail(DECRYPT_ERROR, "the server's Finished does not match the handshake", SERVER)
    if tc._hs:
        raise fail(UNEXPECTED_MESSAGE, "handshake data after the server's Finished")


# The helpers below use modules that are dropped after them: called as functions, their frames
# are gone by then, so no stale reference on a stack keeps a dropped module's code in RAM.


def _signatures(tc, todo, leaf, randoms):
    # the chain's signatures, then the ServerKeyExchange's: the server's ECDHE point
    from upcert import sigs

    try:
        bad = sigs.path(todo)  # the certificates' signatures (chain.walk() left them)
        if bad:
            raise fail(bad[0], "server certificate: %s" % bad[1], SERVER)
        todo = None
        t, m = tc.next_hs()
        if t != _SERVER_KX:
            raise fail(UNEXPECTED_MESSAGE, "expected ServerKeyExchange, got type %d" % t)
        return _server_kx(m, leaf, randoms, sigs)
    finally:
        sigs = None
        drop("sigs", "rsa", "sha512")


def _key(b):
    from upcert.p256 import Key

    if len(b) == 32:  # the scalar (tls12.key_scalar): no DER to read
        return Key(int.from_bytes(b, "big"))
    k = Key.from_der(b)
    Key = None
    drop("keyder", "der")  # read the key file
    return k


def _ecdhe(peer):
    from upcert.p256 import ecdhe

    return ecdhe(peer)


def _sign(signer, h):
    r, s = signer.sign_digest(h)
    return _ecdsa_der(r, s)


def _server_kx(m, leaf, randoms, sigs):
    # ECDHE ServerKeyExchange (RFC 8422 §5.4): ECParameters, ECPoint, signature by the leaf's
    # key over both randoms and the parameters; the server's point
    r = Reader(m, "ServerKeyExchange")
    if r.u8() != 3 or r.u16() != _SECP256R1:  # named_curve secp256r1
        raise fail(ILLEGAL_PARAMETER, "the server's ECDHE group is not P-256", SERVER)
    point = bytes(r.vec(1))
    params = bytes(m[: r.i])
    code = r.u16()
    sig = bytes(r.vec(2))
    r.end()
    if len(point) != 65 or point[0] != 4:
        raise fail(ILLEGAL_PARAMETER, "the server's ECDHE point is not uncompressed P-256")
    alg = sigs.scheme(code)
    if alg is None:  # we offer exactly what sigs verifies
        raise fail(ILLEGAL_PARAMETER, "ServerKeyExchange signed with 0x%04x, which we did "
                   "not offer" % code, SERVER)
    why = sigs.unfit(alg, leaf)
    if why and why[1]:
        raise fail(_UNSUPPORTED_CERTIFICATE, "ServerKeyExchange: %s" % why[0], SERVER)
    try:
        ok = not why and sigs.check(alg, leaf, randoms + params, sig)
    except (ValueError, CertificateError):  # a malformed signature or key
        ok = False
    if not ok:
        raise fail(DECRYPT_ERROR, "ServerKeyExchange signature does not verify with the "
                   "server's certificate", SERVER)
    return point


def _vec3(data):
    return len(data).to_bytes(3, "big") + data


def _cert_request(m):
    r = Reader(m, "CertificateRequest")
    types = bytes(r.vec(1))
    algs = r.vec(2)
    r.vec(2)  # certificate_authorities: we have one certificate anyway
    r.end()
    if 64 not in types:  # ecdsa_sign (RFC 8422 §5.5)
        raise fail(HANDSHAKE_FAILURE, "the server does not take ECDSA client certificates",
                    SERVER)
    for i in range(0, len(algs) - 1, 2):
        if u16(algs, i) == _ECDSA_SHA256:
            return
    raise fail(HANDSHAKE_FAILURE, "the server does not take ecdsa_secp256r1_sha256 "
                "signatures from clients", SERVER)



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
