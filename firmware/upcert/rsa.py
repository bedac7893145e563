# RSA signature verification (RFC 8017) for checking a server's certificate chain in upcert's own
# TLS client: RSASSA-PKCS1-v1_5 (§8.2.2) and RSASSA-PSS (§8.1.2), public key from an X.509
# SubjectPublicKeyInfo. Verification only: no private key is ever handled here.
import hashlib

from micropython import const

from upcert.errors import CertificateError

_MIN_BITS = const(2048)
_MAX_BITS = const(4096)
# DER tags (X.690 §8.1.2), as in der.py, which is loaded only to read a SubjectPublicKeyInfo
_INTEGER = const(0x02)
_BIT_STRING = const(0x03)
_OID = const(0x06)
_SEQUENCE = const(0x30)
# rsaEncryption (RFC 8017 §A.1) and id-RSASSA-PSS (RFC 4055 §1.2) key algorithms.
_KEY_OIDS = ("1.2.840.113549.1.1.1", "1.2.840.113549.1.1.10")
# DER of DigestInfo up to the digest, RFC 8017 §9.2 note 1: SEQUENCE { AlgorithmIdentifier
# { id-sha*, NULL }, OCTET STRING (hLen) }.
_PREFIX = {
    "sha256": b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20",
    "sha384": b"\x30\x41\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x02\x05\x00\x04\x30",
    "sha512": b"\x30\x51\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x03\x05\x00\x04\x40",
}


def _hash(name):
    # The hash constructor for a name of _PREFIX; SHA-384/512 load only when a chain needs them.
    if name == "sha256":
        return hashlib.sha256
    if name == "sha384" or name == "sha512":
        from upcert import sha512

        return getattr(sha512, name)
    raise ValueError("hash must be sha256, sha384 or sha512, not %r" % (name,))


def _bitlen(n):
    # int.bit_length() is missing from MicroPython.
    if n <= 0:
        return 0
    bits = 0
    while n >> (bits + 64):
        bits += 64
    while n >> bits:
        bits += 1
    return bits


class PublicKey:
    """An RSA public key (n, e), 2048 to 4096 bits, e odd and >= 3. CertificateError otherwise."""

    def __init__(self, n, e):
        bits = _bitlen(n)
        if not _MIN_BITS <= bits <= _MAX_BITS or not n & 1:
            raise CertificateError("RSA key: modulus of %d bits (want an odd 2048-4096)" % bits)
        if e < 3 or not e & 1 or e >= n:
            raise CertificateError("RSA key: public exponent %d is not odd, >= 3 and < n" % e)
        self.n = n
        self.e = e
        self.bits = bits
        self.size = (bits + 7) >> 3  # k, the modulus length in bytes

    @classmethod
    def from_spki(cls, data):
        """The key in a DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) with an RSAPublicKey
        (RFC 8017 §A.1.1), algorithm rsaEncryption or id-RSASSA-PSS."""
        from upcert import der

        buf, s, e = der.single(data, _SEQUENCE, "SubjectPublicKeyInfo")
        as_, ae = der.expect(buf, s, e, _SEQUENCE, "key algorithm")
        os_, oe = der.expect(buf, as_, ae, _OID, "key algorithm")
        oid = der.read_oid(buf, os_, oe)
        if oid not in _KEY_OIDS:
            raise CertificateError("RSA key: algorithm %s is not RSA" % oid)
        bs, be = der.expect(buf, ae, e, _BIT_STRING, "subjectPublicKey")
        if be != e:
            raise der.error("trailing bytes", be, "inside SubjectPublicKeyInfo")
        key = memoryview(der.read_bits(buf, bs, be))
        ks, ke = der.expect(key, 0, len(key), _SEQUENCE, "RSAPublicKey")
        if ke != len(key):
            raise der.error("trailing bytes", ke, "after RSAPublicKey")
        ns, ne = der.expect(key, ks, ke, _INTEGER, "RSA modulus")
        es, ee = der.expect(key, ne, ke, _INTEGER, "RSA public exponent")
        if ee != ke:
            raise der.error("trailing bytes", ee, "inside RSAPublicKey")
        if key[ns] & 0x80 or key[es] & 0x80:
            raise CertificateError("RSA key: negative modulus or exponent")
        n = int.from_bytes(der.read_uint_bytes(key, ns, ne), "big")
        return cls(n, int.from_bytes(der.read_uint_bytes(key, es, ee), "big"))

    def _open(self, sig, size):
        # RSAVP1 (§5.2.2) of a k-byte signature as `size` bytes, or None when it is not one.
        if len(sig) != self.size:
            return None
        s = int.from_bytes(sig, "big")
        if s >= self.n:
            return None
        m = pow(s, self.e, self.n)
        if m >> (8 * size):  # I2OSP: "integer too large" (§4.1)
            return None
        return m.to_bytes(size, "big")


def _digest(hash_name, digest):
    # The hash constructor, once digest is known to have that hash's length (the last byte of
    # its DigestInfo prefix).
    h = _hash(hash_name)
    if len(digest) != _PREFIX[hash_name][-1]:
        raise ValueError("digest has %d bytes, not a %s digest" % (len(digest), hash_name))
    return h


def verify_pkcs1(key, hash_name, digest, sig):
    """True if sig is an RSASSA-PKCS1-v1_5 signature (RFC 8017 §8.2.2) by key of a message whose
    hash_name ("sha256", "sha384", "sha512") digest is `digest`. The whole encoded message is
    built and compared (§8.2.2 step 3), never parsed."""
    _digest(hash_name, digest)
    k = key.size
    em = key._open(sig, k)
    t = _PREFIX[hash_name] + bytes(digest)
    # EMSA-PKCS1-v1_5 (§9.2): 0x00 0x01 PS(0xff, at least 8) 0x00 T; k >= 256 leaves room.
    return em is not None and em == b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t


def _mgf1(h, seed, n):
    # MGF1 (RFC 8017 §B.2.1) with hash h: the first n bytes of H(seed||0) || H(seed||1) || ...
    out = bytearray()
    c = 0
    while len(out) < n:
        g = h(seed)
        g.update(c.to_bytes(4, "big"))
        out.extend(g.digest())
        c += 1
    return out[:n]


def verify_pss(key, hash_name, digest, sig, salt_len=None):
    """True if sig is an RSASSA-PSS signature (RFC 8017 §8.1.2, EMSA-PSS §9.1.2) by key of a
    message whose hash_name digest is `digest`, MGF1 with the same hash, trailer 0xbc. salt_len:
    the salt length from the signature's parameters; None accepts any (recovered from the
    padding, as "auto" in OpenSSL)."""
    h = _digest(hash_name, digest)
    hlen = len(digest)
    em_bits = key.bits - 1
    em_len = (em_bits + 7) >> 3
    em = key._open(sig, em_len)
    if em is None or em[-1] != 0xBC or em_len < hlen + 2:
        return False
    top = 8 * em_len - em_bits  # leftmost bits of the encoded message that must be zero
    masked = em[: em_len - hlen - 1]
    hh = em[em_len - hlen - 1 : -1]
    if masked[0] >> (8 - top):
        return False
    x = int.from_bytes(masked, "big") ^ int.from_bytes(_mgf1(h, hh, len(masked)), "big")
    x &= (1 << (8 * len(masked) - top)) - 1  # step 9: clear the leftmost bits
    db = x.to_bytes(len(masked), "big")
    # Step 10: DB = PS (zeros) || 0x01 || salt.
    i = 0
    while i < len(db) and db[i] == 0:
        i += 1
    if i == len(db) or db[i] != 1:
        return False
    salt = db[i + 1 :]
    if salt_len is not None and len(salt) != salt_len:
        return False
    m = h(bytes(8))  # M' = 0x00 * 8 || mHash || salt (step 12)
    m.update(digest)
    m.update(salt)
    return m.digest() == hh
