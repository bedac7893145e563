# Device tests for tls12.key_scalar: the agent's connector reads a software key's DER once, so a
# handshake makes its p256.Key from the scalar without loading the DER reader.
import sys

from checks import eq, raises
from upcert import p256, tls12
from upcert.errors import CertificateError


def test_scalar_of_a_pkcs8_key():
    k = p256.generate()
    d = k._d.to_bytes(32, "big")
    eq(tls12.key_scalar(k.private_der()), d, "PKCS#8")
    eq("upcert.der" in sys.modules, False, "the DER reader is dropped after")
    # the scalar makes the same key: same public point, a signature that verifies
    k2 = p256.Key(int.from_bytes(d, "big"))
    eq(k2.public_point(), k.public_point(), "public point")
    h = b"\x11" * 32
    r, s = k2.sign_digest(h)
    eq(p256.verify_digest(k.public_point(), h, r, s), True, "signature")


def test_not_a_p256_key_is_refused_at_once():
    raises(CertificateError, tls12.key_scalar, b"\x30\x03\x02\x01\x07", contains="private key")
    raises(CertificateError, tls12.key_scalar, b"-----BEGIN", contains="PEM")
