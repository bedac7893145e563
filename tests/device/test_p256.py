# Device tests for upcert.p256 on the unix port: published vectors (RFC 6979 §A.2.5, SEC 2
# generator multiples, RFC 4231 HMAC), group law edge cases, and bad-input errors.
import hashlib
from binascii import hexlify, unhexlify

from checks import eq, raises, true
from upcert import der, derw, p256
from upcert.errors import CertificateError

N = p256.N
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
# RFC 6979 §A.2.5 (ECDSA, 256 bits, prime field: NIST P-256): the test key pair (public test
# vector, not a secret) and the SHA-256 signatures of "sample" and "test".
RFC_X = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
RFC_U = unhexlify(
    "0460FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
    "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299"
)
RFC_SIGS = (
    (
        b"sample",
        0xA6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60,
        0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716,
        0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8,
    ),
    (
        b"test",
        0xD16B6AE827F17175E040871A1C7EC3500192C4C92677336EC2537ACAEE0008E0,
        0xF1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367,
        0x019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083,
    ),
)
# kG for small k and for n-1 (= -G): SEC 2 v2 §2.4.2 gives G; 2G, 3G as in the NIST P-256
# multiplication vectors (point-at-infinity.org/ecc/nisttv, also checked with pyca/cryptography).
MULTIPLES = (
    (
        1,
        "6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296",
        "4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5",
    ),
    (
        2,
        "7CF27B188D034F7E8A52380304B51AC3C08969E277F21B35A60B48FC47669978",
        "07775510DB8ED040293D9AC69F7430DBBA7DADE63CE982299E04B79D227873D1",
    ),
    (
        3,
        "5ECBE4D1A6330A44C8F7EF951D4BF165E6C6B721EFADA985FB41661BC6E7FD6C",
        "8734640C4998FF7E374B06CE1A64A2ECD82AB036384FB83D9A79B127A27D5032",
    ),
    (
        N - 1,
        "6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296",
        "B01CBD1C01E58065711814B583F061E9D431CCA994CEA1313449BF97C840AE0A",
    ),
)
GJ = (int(MULTIPLES[0][1], 16), int(MULTIPLES[0][2], 16), 1)  # G in Jacobian coordinates


def _pt(x, y):
    return unhexlify("04" + x + y)


def _on_curve(point):
    x = int.from_bytes(point[1:33], "big")
    y = int.from_bytes(point[33:], "big")
    return (y * y - (x * x * x - 3 * x + B)) % P == 0


def _sha(m):
    return hashlib.sha256(m).digest()


def test_generator_multiples():
    for k, x, y in MULTIPLES:
        eq(hexlify(p256.mul_base(k)).decode().upper(), "04" + x + y, "%x*G" % k)
        true(_on_curve(p256.mul_base(k)), "%x*G on the curve" % k)


def test_group_order_and_wraparound():
    g = GJ
    eq(p256._affine(p256._mul(N, g)), None, "n*G is infinity")
    eq(p256._affine(p256._mul(0, g)), None, "0*G is infinity")
    eq(p256._point_bytes(p256._affine(p256._mul(N + 2, g))), p256.mul_base(2), "(n+2)G = 2G")
    # the generic add: P + (-P) = infinity, P + P = 2P, O + P = P
    minus = p256._mul(N - 1, g)
    eq(p256._affine(p256._add(g, minus)), None, "G + (-G)")
    eq(p256._point_bytes(p256._affine(p256._add(g, g))), p256.mul_base(2), "G + G")
    eq(p256._add((1, 1, 0), g), g, "O + G")


def test_random_scalars_agree_with_double_and_add():
    # The windowed ladder against a plain double-and-add of the same scalars.
    g = GJ
    for seed in (b"a", b"b", b"c"):
        k = int.from_bytes(_sha(seed), "big") % N
        acc = (1, 1, 0)
        for i in range(255, -1, -1):
            acc = p256._dbl(acc)
            if (k >> i) & 1:
                acc = p256._add(acc, g)
        eq(p256._affine(p256._mul(k, g)), p256._affine(acc), "k*G for seed %r" % seed)


def test_rfc6979_nonces_and_signatures():
    key = p256.Key(RFC_X)
    eq(key.public_point(), RFC_U, "RFC 6979 A.2.5 public key U = xG")
    for msg, k, r, s in RFC_SIGS:
        e = int.from_bytes(_sha(msg), "big")
        eq(next(p256._nonces(RFC_X, e)), k, "k for %r" % msg)
        eq(key.sign_digest(_sha(msg)), (r, s), "(r, s) for %r" % msg)
        true(p256.verify_digest(RFC_U, _sha(msg), r, s), "RFC signature of %r verifies" % msg)


def test_hmac_sha256_rfc4231():
    # RFC 4231 §4.3 (test case 2) and §4.7 (test case 6: key longer than the block).
    eq(
        hexlify(p256.hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        "case 2",
    )
    eq(
        hexlify(
            p256.hmac_sha256(
                b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First"
            )
        ),
        b"60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        "case 6",
    )


def test_generate_sign_verify_and_tamper():
    key = p256.generate()
    q = key.public_point()
    true(len(q) == 65 and q[0] == 4 and _on_curve(q), "generated public key is on the curve")
    d = _sha(b"rotate me")
    r, s = key.sign_digest(d)
    true(p256.verify_digest(q, d, r, s), "round trip")
    eq(key.sign_digest(d), (r, s), "RFC 6979 signatures are deterministic")
    true(not p256.verify_digest(q, _sha(b"rotate me!"), r, s), "other digest rejected")
    true(not p256.verify_digest(q, d, r ^ 1, s), "tampered r rejected")
    true(not p256.verify_digest(q, d, r, (s + 1) % N), "tampered s rejected")
    true(not p256.verify_digest(q, d, s, r), "swapped r and s rejected")
    true(not p256.verify_digest(p256.generate().public_point(), d, r, s), "other key rejected")
    for bad in ((0, s), (r, 0), (N, s), (r, N), (r + N, s)):
        true(not p256.verify_digest(q, d, *bad), "out of range %r rejected" % (bad,))
    true(p256.verify_digest(q, d, r, N - s), "(r, n-s) also verifies: low-s is not enforced")


def test_generate_rejection_sampling():
    # FIPS 186-4 §B.4.2: candidates c > n-2 are drawn again; d = c + 1.
    seq = [b"\xff" * 32, (N - 1).to_bytes(32, "big"), (N - 2).to_bytes(32, "big")]
    key = p256.generate(lambda n: seq.pop(0))
    eq(key.public_point(), p256.mul_base(N - 1), "n-1 and n-2+1: takes the third candidate")
    eq(p256.generate(lambda n: bytes(32)).public_point(), p256.mul_base(1), "c = 0 -> d = 1")
    raises(ValueError, p256.generate, lambda n: b"\xff" * 32, contains="broken")
    raises(ValueError, p256.generate, lambda n: b"\x01" * 31, contains="31 bytes")


def test_bad_inputs():
    key = p256.Key(RFC_X)
    for bad in (b"", b"\0" * 31, b"\0" * 33, "x" * 32, None):
        raises(ValueError, key.sign_digest, bad, contains="32-byte SHA-256")
        raises(ValueError, p256.verify_digest, RFC_U, bad, 1, 1, contains="32-byte")
    for bad in (0, N, -1, N + 5, "1"):
        raises(ValueError, p256.Key, bad, contains="[1, n-1]")
    d = _sha(b"x")
    raises(ValueError, p256.verify_digest, RFC_U[1:], d, 1, 1, contains="65 bytes 04||X||Y")
    raises(ValueError, p256.verify_digest, b"\x02" + RFC_U[1:], d, 1, 1, contains="uncompressed")
    off = RFC_U[:-1] + bytes((RFC_U[-1] ^ 1,))
    raises(ValueError, p256.verify_digest, off, d, 1, 1, contains="not on the P-256 curve")
    big = b"\x04" + P.to_bytes(32, "big") + RFC_U[33:]
    raises(ValueError, p256.verify_digest, big, d, 1, 1, contains="not on the P-256 curve")


def test_signature_der():
    eq(p256.signature_der(1, 0x80), b"\x30\x07\x02\x01\x01\x02\x02\x00\x80", "minimal INTEGERs")
    _, _, r, s = RFC_SIGS[0]
    sig = p256.signature_der(r, s)
    buf, st, en = der.single(sig)
    kids = list(der.children(buf, st, en))
    eq(len(kids), 2, "two INTEGERs")
    eq(der.read_uint_bytes(buf, kids[0][1], kids[0][2]), r.to_bytes(32, "big"), "r")
    eq(buf[kids[0][1]], 0, "r has its sign pad (top bit set)")
    _, _, r2, s2 = RFC_SIGS[1]
    eq(len(p256.signature_der(r2, s2)), 2 + 35 + 34, "s2 (leading 0x01) needs no pad byte")


def test_private_der_layout_and_reload():
    key = p256.Key(RFC_X)
    blob = key.private_der()
    eq(len(blob), 138, "PKCS#8 size as OpenSSL writes it")
    true(blob.startswith(b"\x30\x81\x87\x02\x01\x00" + derw.EC_ALG + b"\x04\x6d\x30\x6b"), "header")
    true(RFC_X.to_bytes(32, "big") in blob and blob.endswith(RFC_U), "scalar and public key")
    eq(p256.Key.from_der(blob).public_point(), RFC_U, "PKCS#8 reload")
    small = p256.Key(5).private_der()
    eq(p256.Key.from_der(small).public_point(), p256.mul_base(5), "scalar padded to 32 bytes")


P256_PARAMS = b"\xa0\x0a\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"  # [0] prime256v1
P384_PARAMS = b"\xa0\x07\x06\x05\x2b\x81\x04\x00\x22"  # [0] secp384r1 (RFC 5480 §2.1.1.1)


def _sec1(d_bytes, params=P256_PARAMS, public=RFC_U):
    # ECPrivateKey (RFC 5915 §3) built by hand: version 1, privateKey, [0] params, [1] publicKey.
    body = b"\x02\x01\x01\x04" + bytes((len(d_bytes),)) + d_bytes + params
    if public:
        body += b"\xa1\x44\x03\x42\x00" + public
    return b"\x30" + bytes((len(body),)) + body


def test_sec1_reload():
    d = RFC_X.to_bytes(32, "big")
    for params in (P256_PARAMS, b""):
        for public in (RFC_U, None):
            key = p256.Key.from_der(_sec1(d, params, public))
            eq(key.public_point(), RFC_U, "SEC 1 params=%r public=%s" % (params, bool(public)))
    eq(p256.Key.from_der(_sec1(b"\x07", b"", None)).public_point(), p256.mul_base(7), "short d")


def test_from_der_errors():
    d = RFC_X.to_bytes(32, "big")
    other = p256.mul_base(2)
    raises(CertificateError, p256.Key.from_der, _sec1(d, public=other), contains="does not match")
    raises(CertificateError, p256.Key.from_der, _sec1(bytes(32)), contains="out of range")
    raises(CertificateError, p256.Key.from_der, _sec1(b"\x01" * 33, b"", None), contains="33-byte")
    raises(CertificateError, p256.Key.from_der, _sec1(d, P384_PARAMS), contains="1.3.132.0.34")
    blob = bytearray(p256.Key(RFC_X).private_der())
    rsa = bytes(blob).replace(b"\x2a\x86\x48\xce\x3d\x02\x01", b"\x2a\x86\x48\xce\x3d\x02\x02")
    raises(CertificateError, p256.Key.from_der, rsa, contains="id-ecPublicKey")
    blob[-1] ^= 1  # a bit flip in the stored public key
    raises(CertificateError, p256.Key.from_der, bytes(blob), contains="does not match")
    raises(CertificateError, p256.Key.from_der, b"\x30\x03\x02\x01\x02", contains="bad version")
    pem = b"-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n"
    raises(CertificateError, p256.Key.from_der, pem, contains="PEM")
    raises(CertificateError, p256.Key.from_der, b"\x04\x00", contains="expected SEQUENCE")
    raises(
        CertificateError,
        p256.Key.from_der,
        p256.Key(RFC_X).private_der()[:-3],
        contains="truncated",
    )
