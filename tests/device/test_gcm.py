# Device tests for upcert.gcm on the unix port: McGrew & Viega, "The Galois/Counter Mode of
# Operation (GCM)", Appendix B, Test Cases 1-4 (AES-128, 96-bit IV; the same values are in NIST's
# gcmEncryptExtIV128.rsp CAVS vectors), tag and ciphertext tampering, and bad arguments.
from binascii import hexlify, unhexlify

from checks import eq, raises
from upcert.gcm import GCM

K3 = unhexlify("feffe9928665731c6d6a8f9467308308")
IV3 = unhexlify("cafebabefacedbaddecaf888")
P3 = unhexlify(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
C3 = (
    "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
    "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
)
A4 = unhexlify("feedfacedeadbeeffeedfacedeadbeefabaddad2")
# (key, iv, plaintext, aad, ciphertext hex, tag hex): Test Cases 1, 2, 3, 4.
CASES = (
    (bytes(16), bytes(12), b"", b"", "", "58e2fccefa7e3061367f1d57a4e7455a"),
    (bytes(16), bytes(12), bytes(16), b"", "0388dace60b6a392f328c2b971b2fe78",
     "ab6e47d42cec13bdf53a67b21257bddf"),
    (K3, IV3, P3, b"", C3, "4d5c2af327cd64a62cf35abd2ba6fab4"),
    (K3, IV3, P3[:60], A4, C3[:120], "5bc94fbc3221a5db94fae95ae7121a47"),
)


def test_spec_test_cases_1_to_4_seal():
    for i, (key, iv, pt, aad, ct, tag) in enumerate(CASES):
        eq(hexlify(GCM(key).seal(iv, aad, pt)).decode(), ct + tag, "Test Case %d" % (i + 1))


def test_spec_test_cases_1_to_4_open():
    for i, (key, iv, pt, aad, ct, tag) in enumerate(CASES):
        eq(bytes(GCM(key).open(iv, aad, unhexlify(ct + tag))), pt, "Test Case %d" % (i + 1))


def test_one_key_many_records():
    # The same context (its buffers reused) for records of every length around the block and
    # chunk sizes gives what a fresh context gives.
    g = GCM(K3)
    data = bytes(range(256)) * 3
    for n in (0, 1, 15, 16, 17, 255, 256, 257, 600):
        nonce = n.to_bytes(12, "big")
        sealed = g.seal(nonce, b"hdr", data[:n])
        eq(sealed, GCM(K3).seal(nonce, b"hdr", data[:n]), "length %d" % n)
        eq(bytes(g.open(nonce, b"hdr", sealed)), data[:n], "round trip %d" % n)


def test_tampering_fails():
    key, iv, pt, aad, ct, tag = CASES[3]
    g = GCM(key)
    good = unhexlify(ct + tag)
    for pos in (0, 30, len(good) - 17, len(good) - 16, len(good) - 1):
        bad = bytearray(good)
        bad[pos] ^= 0x01
        raises(ValueError, g.open, iv, aad, bad, contains="tag mismatch")
    raises(ValueError, g.open, iv, aad[:-1], good)  # other AAD
    raises(ValueError, g.open, bytes(12), aad, good)  # other nonce
    raises(ValueError, g.open, iv, aad, good[:15], contains="cannot hold a tag")


def test_bad_arguments():
    raises(ValueError, GCM, bytes(32), contains="16 bytes")
    raises(ValueError, GCM(bytes(16)).seal, bytes(8), b"", b"", contains="12 bytes")
    raises(ValueError, GCM(bytes(16)).open, bytes(16), b"", bytes(16), contains="12 bytes")
