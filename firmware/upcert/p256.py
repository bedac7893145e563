# NIST P-256 in pure MicroPython: Jacobian point arithmetic, key generation, ECDSA with RFC 6979
# nonces, key files (read back by keyder.py). NOT constant time (big-int operations take
# data-dependent time); the ladder below only keeps the sequence of point operations independent
# of the scalar's bits.
import hashlib

from micropython import const

# Curve parameters, SEC 2 v2 §2.4.2 (secp256r1 = prime256v1 = NIST P-256), a = -3.
_P = const(0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF)
_N = const(0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551)
_B = const(0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B)
_GX = const(0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296)
_GY = const(0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)
_OCTETS = const(0x04)
_BIT_STRING = const(0x03)  # DER tag (X.690 §8.1.2)
N = _N  # the group order, public for callers that range-check scalars


def _inv(a, m):
    # a^(m-2) mod m (Fermat; m is prime). Written out because pow(a, e, m) is a build option.
    r = 1
    e = m - 2
    while e:
        if e & 1:
            r = r * a % m
        a = a * a % m
        e >>= 1
    return r


# Points are Jacobian triples (x, y, z). Parameters are named with letters other modules use too:
# each distinct parameter name is interned for good when the module loads (it is in the .mpy).


def _dbl(t):
    # Jacobian doubling of t for a = -3, "dbl-2001-b" (Bernstein-Lange EFD). Z = 0 stays infinity.
    x, y, z = t
    p = _P
    d = z * z % p
    g = y * y % p
    b = x * g % p
    a = 3 * (x - d) * (x + d) % p
    x3 = (a * a - 8 * b) % p
    z3 = ((y + z) * (y + z) - g - d) % p
    return x3, (a * (4 * b - x3) - 8 * g * g) % p, z3


def _add(a, b):
    # Jacobian addition a + b, "add-2007-bl" (EFD), with the infinity and equal-point cases.
    x1, y1, z1 = a
    x2, y2, z2 = b
    if not z1:
        return b
    if not z2:
        return a
    p = _P
    zz1 = z1 * z1 % p
    zz2 = z2 * z2 % p
    u1 = x1 * zz2 % p
    u2 = x2 * zz1 % p
    s1 = y1 * z2 * zz2 % p
    s2 = y2 * z1 * zz1 % p
    if u1 == u2:
        return _dbl(a) if s1 == s2 else (1, 1, 0)
    h = u2 - u1
    i = 4 * h * h % p
    j = h * i % p
    r = 2 * (s2 - s1)
    v = u1 * i % p
    x3 = (r * r - j - 2 * v) % p
    return x3, (r * (v - x3) - 2 * s1 * j) % p, ((z1 + z2) * (z1 + z2) - zz1 - zz2) * h % p


def _mul(k, b):
    # k*b, fixed 2-bit window with an add at every window. k + n or k + 2n (same point) has
    # exactly 257 bits, so the loop length and the leading bit never depend on k. A 4-bit window
    # is ~16 % faster, but its table of 16 points needs ~6 KB more heap while a rotation runs.
    k += _N
    if not k >> 256:
        k += _N
    d = _dbl(b)
    t = (b, b, d, _add(d, b))
    r = b  # bit 256 is set
    for i in range(254, -2, -2):
        r = _dbl(_dbl(r))
        d = (k >> i) & 3
        a = _add(r, t[d])  # t[0] is a dummy: the add happens, its result is dropped
        r = a if d else r
    return r


def _affine(t):
    # (x, y) of the Jacobian point t, None for infinity. The only inversion of a scalar multiply.
    if not t[2]:
        return None
    zi = _inv(t[2], _P)
    zi2 = zi * zi % _P
    return t[0] * zi2 % _P, t[1] * zi2 * zi % _P


def _digest_int(digest):
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != 32:
        raise ValueError("digest must be the 32-byte SHA-256 of the message, not %r" % (digest,))
    return int.from_bytes(digest, "big")  # bits2int: qlen = hlen = 256 (FIPS 186-4 §6.4)


def decode_point(point65):
    """(x, y) of an uncompressed point 04||X||Y (SEC 1 §2.3.4); ValueError if not on P-256."""
    if not isinstance(point65, (bytes, bytearray)) or len(point65) != 65 or point65[0] != 4:
        raise ValueError("public point must be 65 bytes 04||X||Y (uncompressed, SEC 1 §2.3.3)")
    x = int.from_bytes(point65[1:33], "big")
    y = int.from_bytes(point65[33:], "big")
    if x >= _P or y >= _P or (y * y - x * x * x + 3 * x - _B) % _P:
        raise ValueError("public point is not on the P-256 curve")
    return x, y


def _point_bytes(t):
    # (x, y) as 65 bytes 04||X||Y.
    return b"\x04" + t[0].to_bytes(32, "big") + t[1].to_bytes(32, "big")


def mul_base(k):
    """k*G as 65 bytes 04||X||Y, for 1 <= k < n."""
    return _point_bytes(_affine(_mul(k, (_GX, _GY, 1))))


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104); MicroPython has no hmac module."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    inner = hashlib.sha256(bytes([b ^ 0x36 for b in key]))
    inner.update(msg)
    outer = hashlib.sha256(bytes([b ^ 0x5C for b in key]))
    outer.update(inner.digest())
    return outer.digest()


def _nonces(d, e):
    # RFC 6979 §3.2 with HMAC-SHA256, qlen = hlen = 256: yields candidate k in [1, n-1].
    x = d.to_bytes(32, "big") + (e % _N).to_bytes(32, "big")  # int2octets(x) || bits2octets(h1)
    v = b"\x01" * 32
    k = bytes(32)
    k = hmac_sha256(k, v + b"\x00" + x)  # step d
    v = hmac_sha256(k, v)  # step e
    k = hmac_sha256(k, v + b"\x01" + x)  # step f
    v = hmac_sha256(k, v)  # step g
    while True:  # step h
        v = hmac_sha256(k, v)
        c = int.from_bytes(v, "big")
        if 0 < c < _N:
            yield c
        k = hmac_sha256(k, v + b"\x00")
        v = hmac_sha256(k, v)


class Key:
    """A P-256 private key, d in [1, n-1]. A signer: sign_digest() and public_point().

    Keep it on the board: never print or log it; private_der() is for the key store only.
    """

    def __init__(self, d):
        if not isinstance(d, int) or not 0 < d < _N:
            raise ValueError("P-256 private key must be an int in [1, n-1]")
        self._d = d
        self._q = None

    def public_point(self):
        """The public key Q = dG as 65 bytes 04||X||Y (computed once, then cached)."""
        if self._q is None:
            self._q = mul_base(self._d)
        return self._q

    def sign_digest(self, digest32):
        """ECDSA signature (r, s) of a 32-byte SHA-256 digest (FIPS 186-4 §6.4), k per RFC 6979."""
        e = _digest_int(digest32)
        d = self._d
        for k in _nonces(d, e):
            r = _affine(_mul(k, (_GX, _GY, 1)))[0] % _N
            s = _inv(k, _N) * (e + r * d) % _N
            if r and s:
                return r, s

    def private_der(self):
        """PKCS#8 PrivateKeyInfo (RFC 5208 §5) around a SEC 1 ECPrivateKey (RFC 5915 §3) with the
        public key; curve parameters only in the outer AlgorithmIdentifier, as OpenSSL writes it.
        mbedTLS loads it (tls.SSLContext.load_cert_chain)."""
        from upcert import derw  # the DER writer: not in RAM for a handshake or a check

        ec = derw.seq(
            b"\x02\x01\x01\x04\x20",  # version 1, privateKey OCTET STRING (32 bytes)
            self._d.to_bytes(32, "big"),
            derw.tlv(0xA1, derw.tlv(_BIT_STRING, b"\x00" + self.public_point())),
        )
        return derw.seq(b"\x02\x01\x00", derw.EC_ALG, derw.tlv(_OCTETS, ec))

    @classmethod
    def from_der(cls, data):
        """Load a P-256 key from PKCS#8 (RFC 5208) or SEC 1 ECPrivateKey (RFC 5915) DER:
        keyder.load, whose reader is in RAM only while a key is read (not for a key made, a
        signature or a check)."""
        from upcert.keyder import load

        return load(data, cls)


def generate(rng=None):
    """A new Key with d uniform in [1, n-1]: FIPS 186-4 §B.4.2 (candidates from rng(32), those
    above n-2 rejected, d = c + 1). rng(nbytes) -> bytes defaults to os.urandom (the ESP32's
    hardware RNG; call it with Wi-Fi or Bluetooth on, or after the bootloader, for full entropy)."""
    if rng is None:
        import os

        rng = os.urandom
    for _ in range(64):  # a good rng rejects with probability < 2^-32
        b = rng(32)
        if len(b) != 32:
            raise ValueError("rng(32) returned %d bytes" % len(b))
        c = int.from_bytes(b, "big")
        if c <= _N - 2:
            return Key(c + 1)
    raise ValueError("rng keeps returning values above n-2: is it broken (stuck at 0xff)?")


def ecdhe(peer65, rng=None):
    """Ephemeral ECDH on P-256 (RFC 8422 §5.10): a new key, then (its public point, 65 bytes;
    the shared secret, the X coordinate of d*Q, 32 bytes). ValueError for a point not on the
    curve (checked before it is used, SEC 1 §3.2.2)."""
    q = decode_point(peer65)
    k = generate(rng)
    xy = _affine(_mul(k._d, q + (1,)))
    if xy is None:
        raise ValueError("ECDH gave the point at infinity")
    return k.public_point(), xy[0].to_bytes(32, "big")


def verify_digest(point65, digest32, r, s):
    """True if (r, s) is a valid ECDSA signature of digest32 by the public key point65.

    ValueError for a malformed point or digest; False for any signature that does not verify."""
    q = decode_point(point65)
    e = _digest_int(digest32)
    if not (0 < r < _N and 0 < s < _N):
        return False
    w = _inv(s, _N)
    pt = _add(_mul(e * w % _N, (_GX, _GY, 1)), _mul(r * w % _N, q + (1,)))
    xy = _affine(pt)
    return xy is not None and xy[0] % _N == r


def signature_der(r, s):
    """ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } (RFC 3279 §2.2.3)."""
    from upcert import derw

    return derw.seq(derw.uint(r), derw.uint(s))
