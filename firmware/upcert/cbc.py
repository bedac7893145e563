# TLS 1.2 record protection for the AES_128_CBC suites (RFC 5246 §6.2.3.2): HMAC over the
# record (MAC-then-encrypt), padding, AES-CBC with an explicit random IV per record. The opening
# side checks padding and MAC without a branch between the two (Lucky Thirteen, RFC 5246 §6.2.3.2).
import hashlib
import os

import cryptolib
from micropython import const

from upcert.hmac256 import Hmac

_CBC = const(2)  # cryptolib.aes mode 2: CBC


class CBC:
    """One direction of a TLS 1.2 AES-128-CBC connection: CBC(enc_key16, mac_key,
    hashfn=hashlib.sha256); hashlib.sha1 for the *_CBC_SHA suites.

    header, in seal() and open(), is the 11 bytes the MAC covers before the length:
    seq_num (8, big-endian) || type (1) || version (2) (RFC 5246 §6.2.3.1)."""

    def __init__(self, enc_key, mac_key, hashfn=hashlib.sha256):
        if len(enc_key) != 16:
            raise ValueError("AES-128-CBC key must be 16 bytes, not %d" % len(enc_key))
        self._key = bytes(enc_key)
        self._mac = Hmac(mac_key, hashfn)
        self._hash = hashfn

    def seal(self, header, fragment, iv=None):
        """IV || AES-CBC(fragment || MAC || padding), a bytearray: GenericBlockCipher. iv: 16
        bytes, by default os.urandom(16) (it must be unpredictable, RFC 5246 §6.2.3.2)."""
        if iv is None:
            iv = os.urandom(16)
        n = len(fragment)
        ml = self._mac.size
        pad = 15 - (n + ml) % 16  # the fewest: padding plus its length byte fill the last block
        size = n + ml + pad + 1
        buf = bytearray(size)
        buf[:n] = fragment
        buf[n : n + ml] = self._mac.digest(header, n.to_bytes(2, "big"), fragment)
        for i in range(n + ml, size):
            buf[i] = pad
        out = bytearray(16 + size)
        out[:16] = iv
        cryptolib.aes(self._key, _CBC, iv).encrypt(buf, memoryview(out)[16:])
        return out

    def open(self, header, data):
        """The fragment (a bytearray) of a GenericBlockCipher record. Raises ValueError (TLS:
        bad_record_mac) for a bad length, padding or MAC, the last two alike."""
        ml = self._mac.size
        size = len(data) - 16
        if size <= ml or size % 16:  # public facts: may be reported at once
            raise ValueError("TLS CBC record: %d bytes is not a valid length" % len(data))
        mv = memoryview(data)
        buf = bytearray(size)
        cryptolib.aes(self._key, _CBC, bytes(mv[:16])).decrypt(mv[16:], buf)
        pm = memoryview(buf)
        # From here the same steps run whatever the padding: a bad one counts as a zero-length
        # pad for the MAC ("compute the MAC as if there were a zero-length pad", §6.2.3.2).
        pad = buf[size - 1]
        fits = pad + 1 + ml <= size
        pad *= fits
        t = min(256, size)
        x = int.from_bytes(pm[size - t :], "big") ^ int.from_bytes(bytes((pad,)) * t, "big")
        bad = (x & ((1 << (8 * (pad + 1))) - 1)) != 0  # the pad+1 last bytes must all be pad
        n = size - ml - 1 - pad
        mac = self._mac.digest(header, n.to_bytes(2, "big"), pm[:n])
        self._hash(pm[n:]).digest()  # hash the tail too: about the same work for every pad
        diff = 0
        for i in range(ml):  # every byte, no early exit
            diff |= mac[i] ^ buf[n + i]
        if diff | bad | (not fits):
            raise ValueError("TLS CBC record: bad MAC or padding")
        return buf[:n]
