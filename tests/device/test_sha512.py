# Device tests for upcert.sha512 on the unix port: the FIPS 180-4 examples (NIST "Example
# Algorithms" SHA-384 and SHA-512: "abc" and the 896-bit two-block message), the empty message,
# and streaming in pieces across block boundaries.
import hashlib
from binascii import hexlify

from checks import eq
from upcert.sha512 import Sha384, Sha512, sha384, sha512

M896 = (
    b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
    b"lmnopqrsmnopqrstnopqrstu"
)
VECTORS = (
    (sha512, b"abc", "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a8"
     "36ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"),
    (sha512, M896, "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018501d289e4900f7e4"
     "331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"),
    (sha384, b"abc", "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc23"
     "58baeca134c825a7"),
    (sha384, M896, "09330c33f71147e83d192fc782cd1b4753111b173b3b05d22fa08086e3b0f712fcc7c71a557e2db9"
     "66c3e9fa91746039"),
    # The empty message (NIST CAVS SHA512ShortMsg / SHA384ShortMsg, Len = 0).
    (sha512, b"", "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0"
     "ff8318d2877eec2f63b931bd47417a81a538327af927da3e"),
    (sha384, b"", "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fb"
     "d51ad2f14898b95b"),
)


def test_fips180_examples():
    for i, (h, msg, want) in enumerate(VECTORS):
        eq(hexlify(h(msg).digest()).decode(), want, "vector %d" % i)


def test_sizes_and_names():
    eq(len(Sha512().digest()), 64, "SHA-512 size")
    eq(len(Sha384().digest()), 48, "SHA-384 size")
    eq((Sha512.digest_size, Sha384.digest_size), (64, 48), "digest_size")


def test_streaming_in_pieces():
    data = bytes(range(256)) * 3
    for n in (111, 112, 127, 128, 129, 239, 240, 256, 700):
        want = sha512(data[:n]).digest()
        for step in (1, 7, 64, 128, 200):
            h = Sha512()
            for i in range(0, n, step):
                h.update(memoryview(data)[i : min(n, i + step)])
            eq(h.digest(), want, "n=%d step=%d" % (n, step))


def test_digest_twice_and_update_after():
    h = Sha384(b"ab")
    first = h.digest()
    eq(h.digest(), first, "digest() again")
    h.update(b"c")
    eq(hexlify(h.digest()).decode(), VECTORS[2][2], "update after digest()")
    eq(hashlib.sha256(b"x").digest() != Sha512(b"x").digest()[:32], True, "not SHA-256")
