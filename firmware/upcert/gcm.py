# AES-128-GCM (NIST SP 800-38D) for upcert's own TLS client: the counter blocks go through
# cryptolib's AES in ECB mode (the ESP32 port has no CTR mode), GHASH is big-int arithmetic here.
# 96-bit nonces only (TLS 1.2: salt || explicit nonce, RFC 5288 §3) and 128-bit tags.
import struct

import cryptolib
from micropython import const

_ECB = const(1)  # cryptolib.aes mode 1: ECB
_CHUNK = const(256)  # bytes of key stream made per AES call (16 counter blocks)
_M127 = const((1 << 127) - 1)


class GCM:
    """AES-GCM with one 16-byte key: seal() and open(). The per-key state is the AES key schedule,
    two 16-entry GHASH tables (~2 KB; a 256-entry table is 1.4x faster but ~12 KB a key, measured
    with bench/bench_tls_crypto.py) and two 256-byte buffers reused by every record."""

    def __init__(self, key):
        if len(key) != 16:
            raise ValueError("AES-128-GCM key must be 16 bytes, not %d" % len(key))
        self._aes = cryptolib.aes(key, _ECB)
        h = int.from_bytes(self._aes.encrypt(bytes(16)), "big")  # H = E(K, 0^128), §6.4
        # GHASH's field elements as ints, the block's first bit the most significant (§6.3):
        # the carry-less product of two such ints holds the 255-bit product with x^0 at bit 254.
        # tl[n] = n * H (carry-less) for a 4-bit n, th[n] = tl[n] << 4 (the high nibble of a byte).
        tl = [0] * 16
        for n in range(1, 16):
            tl[n] = tl[n - 1] ^ h if n & 1 else tl[n >> 1] << 1
        self._tl = tl
        self._th = [v << 4 for v in tl]
        self._ctr = bytearray(_CHUNK)
        self._ks = bytearray(_CHUNK)

    def _ghash(self, y, data):
        # y := (y ^ block) * H for each 16-byte block of data, the last one zero-padded (§6.4).
        th = self._th
        tl = self._tl
        n = len(data)
        for i in range(0, n, 16):
            x = int.from_bytes(data[i : i + 16], "big")
            if i + 16 > n:
                x <<= 8 * (i + 16 - n)
            p = 0
            for b in (y ^ x).to_bytes(16, "big"):
                p = (p << 8) ^ th[b >> 4] ^ tl[b & 15]
            # Reduce the 255-bit product modulo x^128 + x^7 + x^2 + x + 1. Its bits 0..126 are
            # x^254..x^128; x^128 = x^7 + x^2 + x + 1, and multiplying by x^k is a right shift.
            v = (p & _M127) << 8
            s = v ^ (v >> 1) ^ (v >> 2) ^ (v >> 7)
            o = s & 0x7F  # x^133..x^128 again: fold once more (a small int)
            y = (p >> 127) ^ (s >> 7) ^ (((o << 7) ^ (o << 6) ^ (o << 5) ^ o) << 114)
        return y

    def _xor_stream(self, nonce, data, out):
        # out[:len(data)] = data ^ key stream from counter 2 on (inc32 of J0, §7.1).
        ctr = self._ctr
        ks = self._ks
        for j in range(0, _CHUNK, 16):
            ctr[j : j + 12] = nonce
        c = 2
        src = memoryview(data)
        cm = memoryview(ctr)
        km = memoryview(ks)
        n = len(data)
        for off in range(0, n, _CHUNK):
            m = min(_CHUNK, n - off)
            blocks = (m + 15) >> 4
            for j in range(blocks):
                struct.pack_into(">I", ctr, 16 * j + 12, c + j)
            c += blocks
            self._aes.encrypt(cm[: 16 * blocks], km[: 16 * blocks])
            # One XOR of two big ints per chunk: far fewer steps than a loop over bytes.
            x = int.from_bytes(km[:m], "big") ^ int.from_bytes(src[off : off + m], "big")
            out[off : off + m] = x.to_bytes(m, "big")

    def _tag(self, nonce, aad, ct):
        # T = E(K, J0) ^ GHASH(A || 0^v || C || 0^u || [len(A)]64 || [len(C)]64), §7.1 steps 5-6.
        y = self._ghash(self._ghash(0, aad), ct)
        y = self._ghash(y, ((len(aad) << 67) | (len(ct) << 3)).to_bytes(16, "big"))
        j0 = self._aes.encrypt(bytes(nonce) + b"\x00\x00\x00\x01")
        return (int.from_bytes(j0, "big") ^ y).to_bytes(16, "big")

    def seal(self, nonce, aad, plaintext):
        """ciphertext || 16-byte tag (a bytearray) of plaintext, authenticating aad as well."""
        _check(nonce)
        n = len(plaintext)
        out = bytearray(n + 16)
        self._xor_stream(nonce, plaintext, out)
        out[n:] = self._tag(nonce, aad, memoryview(out)[:n])
        return out

    def open(self, nonce, aad, data):
        """The plaintext (a bytearray) of data = ciphertext || tag. Raises ValueError (TLS:
        bad_record_mac) when the tag does not match, before decrypting anything."""
        _check(nonce)
        n = len(data) - 16
        if n < 0:
            raise ValueError("AES-GCM: %d bytes cannot hold a tag" % len(data))
        mv = memoryview(data)
        tag = self._tag(nonce, aad, mv[:n])
        diff = 0
        for i in range(16):  # all 16 bytes, no early exit
            diff |= tag[i] ^ mv[n + i]
        if diff:
            raise ValueError("AES-GCM: authentication tag mismatch")
        out = bytearray(n)
        self._xor_stream(nonce, mv[:n], out)
        return out


def _check(nonce):
    if len(nonce) != 12:
        raise ValueError("AES-GCM nonce must be 12 bytes, not %d" % len(nonce))
