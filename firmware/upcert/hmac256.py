# HMAC (RFC 2104) over hashlib's SHA-256 (or SHA-1, same 64-byte block) and the TLS 1.2 PRF
# P_SHA256 (RFC 5246 §5), for upcert's own TLS client. MicroPython has no hmac module.
import hashlib

from micropython import const

_BLOCK = const(64)  # SHA-1 and SHA-256 block size in bytes (RFC 2104 §2: B)


class Hmac:
    """A keyed HMAC: Hmac(key, hashfn=hashlib.sha256). The pads are made once, so a record MAC costs
    two hash objects and no key work. digest(*parts) -> the MAC of the concatenated parts."""

    def __init__(self, key, hashfn=hashlib.sha256):
        if len(key) > _BLOCK:  # RFC 2104 §2: a key longer than B is hashed first
            key = hashfn(key).digest()
        k = bytearray(_BLOCK)
        k[: len(key)] = key
        for i in range(_BLOCK):
            k[i] ^= 0x36
        self._ipad = bytes(k)
        for i in range(_BLOCK):
            k[i] ^= 0x36 ^ 0x5C
        self._opad = bytes(k)
        self._hash = hashfn
        self.size = len(hashfn(b"").digest())

    def digest(self, *parts):
        """HMAC of the concatenation of the byte strings `parts` (none copied)."""
        h = self._hash(self._ipad)
        for p in parts:
            h.update(p)
        o = self._hash(self._opad)
        o.update(h.digest())
        return o.digest()


def hmac_sha256(key, msg):
    """HMAC-SHA256(key, msg), 32 bytes (RFC 2104, RFC 4231)."""
    return Hmac(key).digest(msg)


def prf(secret, label, seed, n):
    """TLS 1.2 PRF(secret, label, seed) truncated to n bytes: P_SHA256(secret, label + seed),
    RFC 5246 §5. label and seed are bytes (label is ASCII, e.g. b"master secret")."""
    mac = Hmac(secret)
    out = bytearray()
    a = mac.digest(label, seed)  # A(1) = HMAC(secret, A(0)), A(0) = label + seed
    while len(out) < n:
        out.extend(mac.digest(a, label, seed))  # HMAC(secret, A(i) + seed)
        a = mac.digest(a)
    return bytes(out[:n])
