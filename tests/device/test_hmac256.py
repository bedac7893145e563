# Device tests for upcert.hmac256 on the unix port: HMAC-SHA256 against RFC 4231 §4.2-4.8 (test
# cases 1-7), HMAC-SHA1 against RFC 2202 §3, and the TLS 1.2 PRF (RFC 5246 §5) against the
# P_SHA256 test vector published on the IETF TLS list (msg03416, 2009), which has no RFC.
import hashlib
from binascii import hexlify, unhexlify

from checks import eq
from upcert.hmac256 import Hmac, hmac_sha256, prf

_KEY131 = b"\xaa" * 131
# (key, data, HMAC-SHA-256) from RFC 4231 §4.2 ... §4.8 (test case 5 is truncated to 128 bits).
RFC4231 = (
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (unhexlify("0102030405060708090a0b0c0d0e0f10111213141516171819"), b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (_KEY131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (_KEY131, b"This is a test using a larger than block-size key and a larger than block-size"
     b" data. The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
)


def test_rfc4231_cases_1_to_7():
    for i, (key, data, want) in enumerate(RFC4231):
        got = hexlify(hmac_sha256(key, data)).decode()
        eq(got[: len(want)], want, "RFC 4231 test case %d" % (i + 1))


def test_parts_are_concatenated_and_key_reused():
    mac = Hmac(b"Jefe")
    eq(mac.size, 32, "size")
    want = unhexlify(RFC4231[1][2])
    eq(mac.digest(b"what do ya ", b"want", b"", memoryview(b" for nothing?")), want, "parts")
    eq(mac.digest(b"what do ya want for nothing?"), want, "same key, second message")


def test_hmac_sha1_rfc2202():
    # RFC 2202 §3 test cases 1 and 6 (the *_CBC_SHA suites' record MAC).
    eq(hexlify(Hmac(b"\x0b" * 20, hashlib.sha1).digest(b"Hi There")).decode(),
       "b617318655057264e28bc0b6fb378c8ef146be00", "RFC 2202 case 1")
    got = Hmac(b"\xaa" * 80, hashlib.sha1).digest(b"Test Using Larger Than Block-Size Key - Hash "
                                                  b"Key First")
    eq(hexlify(got).decode(), "aa4ae5e15272d00e95705637ce8a3b55ed402112", "RFC 2202 case 6")
    eq(Hmac(b"k", hashlib.sha1).size, 20, "size")


def test_tls12_prf_sha256_vector():
    secret = unhexlify("9bbe436ba940f017b17652849a71db35")
    seed = unhexlify("a0ba9f936cda311827a6f796ffd5198c")
    want = (
        "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e"
        "14baf9af0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5"
        "a72e5a5110fff70187347b66"
    )
    eq(hexlify(prf(secret, b"test label", seed, 100)).decode(), want, "PRF 100 bytes")
    eq(hexlify(prf(secret, b"test label", seed, 12)).decode(), want[:24], "verify_data length")
    eq(prf(secret, b"test label", seed, 0), b"", "zero bytes")
