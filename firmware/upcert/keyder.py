# A P-256 private key read back from DER (PKCS#8 or SEC 1), for p256.Key.from_der: the reader is
# in RAM only while a key is read (start-up's key check, upcert's own TLS client with a software
# key, the host's calls), not beside P-256 when a rotation makes a key, signs or verifies.
from micropython import const

from upcert import der
from upcert.errors import CertificateError

_OCTETS = const(0x04)  # DER tag (X.690 §8.1.2); der.py has the others
_EC_OID = const("1.2.840.10045.2.1")
_CURVE_OID = const("1.2.840.10045.3.1.7")


def load(data, key):
    """key(d) (p256.Key) for the scalar in PKCS#8 (RFC 5208) or SEC 1 ECPrivateKey (RFC 5915)
    DER. Passed in, not imported: p256 imports this module.

    Raises CertificateError naming the problem (other curve, encrypted or corrupt file, public
    key that does not belong to the private key)."""
    if data[:5] == b"-----":
        raise CertificateError("private key: got PEM text, want DER (der.pem_to_der converts)")
    buf, s, e = der.single(data, der.SEQUENCE, "private key")
    if s < e and buf[s] == der.SEQUENCE:  # EncryptedPrivateKeyInfo (RFC 5208 §6)
        raise CertificateError("private key: encrypted PKCS#8 is not supported, store it plain")
    vs, p = der.expect(buf, s, e, der.INTEGER, "private key version")
    if bytes(buf[vs:p]) == b"\x00":  # PKCS#8: version 0, algorithm, privateKey
        as_, ae = der.expect(buf, p, e, der.SEQUENCE, "privateKeyAlgorithm")
        _check_oid(buf, as_, ae, _EC_OID, "key algorithm (want id-ecPublicKey)")
        _check_oid(buf, der.expect(buf, as_, ae, der.OID, "")[1], ae, _CURVE_OID, "curve")
        os_, oe = der.expect(buf, ae, e, _OCTETS, "privateKey")
        buf, s, e = der.single(buf[os_:oe], der.SEQUENCE, "ECPrivateKey")
        vs, p = der.expect(buf, s, e, der.INTEGER, "ECPrivateKey version")
    if bytes(buf[vs:p]) != b"\x01":
        raise CertificateError("private key: not a PKCS#8 or SEC 1 EC key (bad version)")
    ds, p = der.expect(buf, p, e, _OCTETS, "ECPrivateKey privateKey")
    if p - ds > 32:
        raise CertificateError("private key: %d-byte scalar is not P-256" % (p - ds))
    try:
        key = key(int.from_bytes(bytes(buf[ds:p]), "big"))
    except ValueError:
        raise CertificateError("private key: scalar out of range [1, n-1]") from None
    for t, fs, fe in der.children(buf, p, e):
        if t == 0xA0:  # [0] parameters: must name P-256
            _check_oid(buf, fs, fe, _CURVE_OID, "curve")
        elif t == 0xA1:  # [1] publicKey: must be ours
            bs, be = der.expect(buf, fs, fe, der.BIT_STRING, "publicKey")
            if der.read_bits(buf, bs, be) != key.public_point():
                raise CertificateError("private key: stored public key does not match it")
    return key


def _check_oid(buf, s, e, want, what):
    os_, oe = der.expect(buf, s, e, der.OID, what)
    got = der.read_oid(buf, os_, oe)
    if got != want:
        raise CertificateError("private key: %s is %s, need %s (P-256)" % (what, got, want))
