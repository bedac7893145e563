# Device tests for upcert.cbc on the unix port: TLS 1.2 AES-128-CBC records (RFC 5246 §6.2.3.2).
# No RFC gives a record vector: the fixed ones below were made with pyca/cryptography's AES-CBC
# and Python's hmac (as in tests/host/test_tls_crypto_vs_cryptography.py, which checks many more).
import hashlib
from binascii import hexlify, unhexlify

from checks import eq, raises
from upcert.cbc import CBC

KEY = bytes(range(16))
MAC_KEY = bytes(range(32, 64))
IV = bytes(range(100, 116))
HDR = b"\x00\x00\x00\x00\x00\x00\x00\x01\x17\x03\x03"  # seq 1, application_data, TLS 1.2
FRAG = b"hello, upcert"
SHA256_RECORD = (
    "6465666768696a6b6c6d6e6f707172734fb8660c919943dbe9dd4b3962c0f6551b6154d0052c3226b278e315"
    "9843db38c6e6f428207dcd9331d5eaa9568b0391"
)
SHA1_RECORD = (
    "6465666768696a6b6c6d6e6f70717273f454d94b4b989552c2c3f5a5783d8b43c1c857e10acfd3fc773a180b"
    "b293bc18ece8583bf6af7ca8e5e3b0e1e8390d43"
)


def test_fixed_records():
    eq(hexlify(CBC(KEY, MAC_KEY).seal(HDR, FRAG, IV)).decode(), SHA256_RECORD, "SHA-256")
    c1 = CBC(KEY, MAC_KEY[:20], hashlib.sha1)
    eq(hexlify(c1.seal(HDR, FRAG, IV)).decode(), SHA1_RECORD, "SHA-1")
    eq(bytes(CBC(KEY, MAC_KEY).open(HDR, unhexlify(SHA256_RECORD))), FRAG, "open SHA-256")
    eq(bytes(c1.open(HDR, unhexlify(SHA1_RECORD))), FRAG, "open SHA-1")


def test_round_trip_lengths_and_random_iv():
    c = CBC(KEY, MAC_KEY)
    for n in (0, 1, 14, 15, 16, 31, 32, 100, 1000):
        data = bytes(range(n % 256)) * (n // 256) + bytes(range(n % 256))
        rec = c.seal(HDR, data)
        eq((len(rec) - 16) % 16, 0, "block multiple %d" % n)
        eq(len(rec) - 16 - n - 32 <= 16, True, "fewest padding bytes %d" % n)
        eq(bytes(c.open(HDR, rec)), data, "round trip %d" % n)
    eq(c.seal(HDR, FRAG)[:16] != c.seal(HDR, FRAG)[:16], True, "a fresh IV per record")


def _reseal(plain):
    # Encrypt chosen plaintext bytes as a record (to forge bad padding or a bad MAC).
    import cryptolib

    return IV + cryptolib.aes(KEY, 2, IV).encrypt(plain)


def test_bad_mac_padding_and_length_fail_alike():
    c = CBC(KEY, MAC_KEY)
    good = c.seal(HDR, FRAG, IV)
    import cryptolib

    plain = bytearray(cryptolib.aes(KEY, 2, IV).decrypt(bytes(good[16:])))
    cases = []
    for pos in (0, len(FRAG), len(plain) - 2):  # the fragment, the MAC, a padding byte
        p = bytearray(plain)
        p[pos] ^= 0x01
        cases.append(_reseal(p))
    p = bytearray(plain)
    p[-1] = 0xFF  # padding length past the start of the record
    cases.append(_reseal(p))
    p = bytearray(plain)
    p[-1] = 0  # a valid-looking zero-length pad: the MAC then covers other bytes
    cases.append(_reseal(p))
    for rec in cases:
        raises(ValueError, c.open, HDR, rec, contains="bad MAC or padding")
    raises(ValueError, c.open, HDR[:10] + b"\x04", good, contains="bad MAC or padding")
    for n in (16, 31, 48, 63):  # no room for IV + MAC + pad, or not whole blocks
        raises(ValueError, c.open, HDR, bytes(n), contains="not a valid length")


def test_bad_key():
    raises(ValueError, CBC, bytes(32), MAC_KEY, contains="16 bytes")
