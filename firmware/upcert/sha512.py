# SHA-384 and SHA-512 (FIPS 180-4) in MicroPython: the ESP32 port's hashlib has only SHA-1 and
# SHA-256, and a server's certificate chain may be signed with SHA-384 or SHA-512 (RSA, ECDSA).
# 64-bit words are ints; slow next to C but only certificate signatures go through it.
from micropython import const

_M64 = const(0xFFFFFFFFFFFFFFFF)
# FIPS 180-4 §4.2.3: the first 64 bits of the fractional parts of the cube roots of the first 80
# primes.
_K = (
    0x428A2F98D728AE22, 0x7137449123EF65CD, 0xB5C0FBCFEC4D3B2F, 0xE9B5DBA58189DBBC,
    0x3956C25BF348B538, 0x59F111F1B605D019, 0x923F82A4AF194F9B, 0xAB1C5ED5DA6D8118,
    0xD807AA98A3030242, 0x12835B0145706FBE, 0x243185BE4EE4B28C, 0x550C7DC3D5FFB4E2,
    0x72BE5D74F27B896F, 0x80DEB1FE3B1696B1, 0x9BDC06A725C71235, 0xC19BF174CF692694,
    0xE49B69C19EF14AD2, 0xEFBE4786384F25E3, 0x0FC19DC68B8CD5B5, 0x240CA1CC77AC9C65,
    0x2DE92C6F592B0275, 0x4A7484AA6EA6E483, 0x5CB0A9DCBD41FBD4, 0x76F988DA831153B5,
    0x983E5152EE66DFAB, 0xA831C66D2DB43210, 0xB00327C898FB213F, 0xBF597FC7BEEF0EE4,
    0xC6E00BF33DA88FC2, 0xD5A79147930AA725, 0x06CA6351E003826F, 0x142929670A0E6E70,
    0x27B70A8546D22FFC, 0x2E1B21385C26C926, 0x4D2C6DFC5AC42AED, 0x53380D139D95B3DF,
    0x650A73548BAF63DE, 0x766A0ABB3C77B2A8, 0x81C2C92E47EDAEE6, 0x92722C851482353B,
    0xA2BFE8A14CF10364, 0xA81A664BBC423001, 0xC24B8B70D0F89791, 0xC76C51A30654BE30,
    0xD192E819D6EF5218, 0xD69906245565A910, 0xF40E35855771202A, 0x106AA07032BBD1B8,
    0x19A4C116B8D2D0C8, 0x1E376C085141AB53, 0x2748774CDF8EEB99, 0x34B0BCB5E19B48A8,
    0x391C0CB3C5C95A63, 0x4ED8AA4AE3418ACB, 0x5B9CCA4F7763E373, 0x682E6FF3D6B2B8A3,
    0x748F82EE5DEFB2FC, 0x78A5636F43172F60, 0x84C87814A1F0AB72, 0x8CC702081A6439EC,
    0x90BEFFFA23631E28, 0xA4506CEBDE82BDE9, 0xBEF9A3F7B2C67915, 0xC67178F2E372532B,
    0xCA273ECEEA26619C, 0xD186B8C721C0C207, 0xEADA7DD6CDE0EB1E, 0xF57D4F7FEE6ED178,
    0x06F067AA72176FBA, 0x0A637DC5A2C898A6, 0x113F9804BEF90DAE, 0x1B710B35131C471B,
    0x28DB77F523047D84, 0x32CAAB7B40C72493, 0x3C9EBE0A15C9BEBC, 0x431D67C49C100D4C,
    0x4CC5D4BECB3E42B6, 0x597F299CFC657E2A, 0x5FCB6FAB3AD6FAEC, 0x6C44198C4A475817,
)
# §5.3.5 and §5.3.4: the initial hash values of SHA-512 and SHA-384.
_H512 = (0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
         0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179)
_H384 = (0xCBBB9D5DC1059ED8, 0x629A292A367CD507, 0x9159015A3070DD17, 0x152FECD8F70E5939,
         0x67332667FFC00B31, 0x8EB44A8768581511, 0xDB0C2E0D64F98FA7, 0x47B5481DBEFA4FA4)


def _compress(h, block, w):
    # One block (128 bytes at block[0:128]) into the state list h, §6.4.2; w: a list of 80.
    for t in range(16):
        w[t] = int.from_bytes(block[8 * t : 8 * t + 8], "big")
    # Rotations are written as two shifts; the bits a left shift pushes past bit 63 are dropped
    # by one mask after the sums (carries only run upwards), so each new word costs one mask.
    for t in range(16, 80):
        x = w[t - 15]
        y = w[t - 2]
        s0 = (x >> 1) ^ (x << 63) ^ (x >> 8) ^ (x << 56) ^ (x >> 7)  # sigma0, (4.12)
        s1 = (y >> 19) ^ (y << 45) ^ (y >> 61) ^ (y << 3) ^ (y >> 6)  # sigma1, (4.13)
        w[t] = (s1 + w[t - 7] + s0 + w[t - 16]) & _M64
    a, b, c, d, e, f, g, hh = h
    k = _K
    for t in range(80):
        t1 = (
            hh
            + ((e >> 14) ^ (e << 50) ^ (e >> 18) ^ (e << 46) ^ (e >> 41) ^ (e << 23))  # SIGMA1
            + (g ^ (e & (f ^ g)))  # Ch (4.8)
            + k[t]
            + w[t]
        )
        t2 = ((a >> 28) ^ (a << 36) ^ (a >> 34) ^ (a << 30) ^ (a >> 39) ^ (a << 25)) + (
            (a & b) | (c & (a | b))  # Maj (4.9)
        )
        hh = g
        g = f
        f = e
        e = (d + t1) & _M64
        d = c
        c = b
        b = a
        a = (t1 + t2) & _M64
    for i, v in enumerate((a, b, c, d, e, f, g, hh)):
        h[i] = (h[i] + v) & _M64


class Sha512:
    """SHA-512 like hashlib's objects: Sha512(data=b""), update(data), digest() (64 bytes; may be
    called again, and update() after it goes on from where it was)."""

    digest_size = 64

    def __init__(self, data=b""):
        self._h = list(_H384 if self.digest_size == 48 else _H512)
        self._buf = bytearray(128)
        self._used = 0  # bytes waiting in _buf
        self._len = 0  # message bytes so far
        self._w = [0] * 80
        if data:
            self.update(data)

    def update(self, data):
        mv = memoryview(data)
        n = len(mv)
        self._len += n
        i = 0
        if self._used:
            i = min(n, 128 - self._used)
            self._buf[self._used : self._used + i] = mv[:i]
            self._used += i
            if self._used < 128:
                return
            _compress(self._h, self._buf, self._w)
            self._used = 0
        while n - i >= 128:
            _compress(self._h, mv[i : i + 128], self._w)
            i += 128
        self._buf[: n - i] = mv[i:]
        self._used = n - i

    def digest(self):
        h = list(self._h)
        used = self._used
        tail = bytearray(256 if used >= 112 else 128)  # §5.1.2: 1, zeros, 128-bit bit length
        tail[:used] = self._buf[:used]
        tail[used] = 0x80
        tail[-16:] = (self._len * 8).to_bytes(16, "big")
        for i in range(0, len(tail), 128):
            _compress(h, memoryview(tail)[i : i + 128], self._w)
        return b"".join([v.to_bytes(8, "big") for v in h])[: self.digest_size]


class Sha384(Sha512):
    """SHA-384 (§6.5): SHA-512 with other initial values, cut to 48 bytes."""

    digest_size = 48


sha384 = Sha384  # hashlib-style names
sha512 = Sha512
