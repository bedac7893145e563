"""ATECC608 emulator, part 2: the P-256 arithmetic of the chip, done with `cryptography`.

Keys are 32-byte big-endian scalars; public keys and signatures use the chip's wire format:
X||Y (64 bytes) and R||S (64 bytes), big-endian (cryptoauthlib calib_genkey.c, calib_sign.c).
"""

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

_CURVE = ec.SECP256R1()
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # group order


class BadPoint(ValueError):
    """A public key that is not a point on P-256."""


def new_private():
    """A fresh private scalar from the OS RNG (the chip's GenKey)."""
    key = ec.generate_private_key(_CURVE)
    return key.private_numbers().private_value.to_bytes(32, "big")


def _key(private):
    return ec.derive_private_key(int.from_bytes(private, "big"), _CURVE)


def public(private):
    """X||Y of the public key of a private scalar."""
    nums = _key(private).public_key().public_numbers()
    return nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")


def _point(pub64):
    try:
        return ec.EllipticCurvePublicNumbers(int.from_bytes(pub64[:32], "big"),
                                             int.from_bytes(pub64[32:], "big"),
                                             _CURVE).public_key()
    except ValueError as e:
        raise BadPoint(str(e)) from None


def sign(private, digest32):
    """ECDSA over an external 32-byte digest (no hashing by the chip): R||S."""
    der = _key(private).sign(bytes(digest32), ec.ECDSA(Prehashed(hashes.SHA256())))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify(pub64, digest32, sig64):
    """True if R||S signs the digest under X||Y. BadPoint for a key off the curve."""
    r, s = int.from_bytes(sig64[:32], "big"), int.from_bytes(sig64[32:], "big")
    if not (0 < r < _N and 0 < s < _N):
        return False
    try:
        _point(pub64).verify(encode_dss_signature(r, s), bytes(digest32),
                             ec.ECDSA(Prehashed(hashes.SHA256())))
        return True
    except InvalidSignature:
        return False


def ecdh(private, pub64):
    """The shared secret: the X coordinate of private * pub (32 bytes)."""
    return _key(private).exchange(ec.ECDH(), _point(pub64))
