# Device tests for upcert.rsa on the unix port: NIST CAVS 11.0 FIPS 186-4 RSA SigVer vectors
# (SigVer15_186-3.rsp, [mod = 2048], SHA256 and SHA384; each failing vector with NIST's reason),
# PSS made with the same vector's key is checked by tests/host/test_tls_crypto_vs_cryptography.py.
# Also: SubjectPublicKeyInfo parsing and the key checks.
import hashlib
from binascii import unhexlify

from checks import eq, raises, true
from upcert import derw, rsa
from upcert.errors import CertificateError
from upcert.sha512 import sha384

N = int(
    "a911245a2cfb33d8ee375df9439f74e669c03a8d9acad25bd27acf3cd8bea7eb9dbe470155c7c72782c94861f7b5"
    "73cd325639fb070e9ba6e621991aefa45106182e4d264be7068035595d7549052989b3e7fd04cabc94012c1278a0"
    "ef8672b1a51dd1a9e276816ba497dea24b4febe3dd8e977707bcd230ca6fb6f8a8bff9e6ba24fbadcd93f00126b1"
    "9b396a38e6ef86d18fef945b9154c1963fb488c7025953511f86d05638bfe056493730bc6778446e59cd3c5c3acf"
    "07a0a3a64943793652f10e3292aa7a6d25a03181cc6f6ba0658d909e59ce2a02bacc9766fd8c4fbd4ed9c23a8668"
    "44b8a794d49e505f9f944870a71aadbe5338039825c2dff81af3",
    16,
)
# (SHAAlg, e, Msg, S, Result) from SigVer15_186-3.rsp [mod = 2048].
VECTORS = (
    ("sha256", 0x10001,
     "6918d6328ca0a8b64bbe81d91cdea519911b59fc2dbd53af76006fec4b18a320787135ce883b2b2edb26041bf86a"
     "a52c230b9620335b6e7f9ec08c7ed6b70823d819e9ab019e9929249f966fdb2069311a0ddc680ac468f514d4ed87"
     "3b04a6beb0985b91a0cfd8ed51b09f9e6d06da739eaa939d5a00275901c4f8cf25076339",
     "794d0a45bc9fc6febb586e319dfa6924c888594802b9deb9668963fdb309bf02817960a7457106fc474f91601436"
     "e8954cbb6815350b2c51b53c968d2c48cc1799550d5d03b41f6e5a8c3c264d2e2fe0b5b8ff53fdcb9dd111c985cb"
     "488d7086e6548b4077ec00721c9cb500fe07a031c2030e8ad1dd0112c34ffd9091d77a187aac8661b298eee39eb6"
     "15f9715c4c48a6762ede55a466ec7f3cdb6a937cfc80188a85d8f8d3a2a80b199ce5e6375af8f02f06d706a34d9c"
     "f38318903965db54aaa7d3fa7a7ee58034cd58c8435739c8906366e2ddba293f2fb2c15f07fa4951014471e7f677"
     "d3bdacffc4c68a906e08d68b39f9010746cbacd22980cee73e8d", "P"),
    ("sha256", 0x11,  # F (2 - Public Key e changed)
     "8457c53956849cdb39bc8e7657d62a2cda9e13e1a5c3574142f1fd041c3add70efbab5207c7b78058196e9aae89b"
     "69bc3f330dc96804f44892d5d8da68f3e2cf87d3c3ec36f8006b51178d44877a9eabc6a2badaf2301110dd060fda"
     "74a9319136e91824ebc5dc179289a2cc9b3971025632419bac0f55a20dcacb8ca92372be",
     "a2a2c0264dbb8b8810aae0b9ec7408553803dd02be6247358ce39f98f0c0f0339915347ff3c4dfee0e0a49b675ba"
     "69e376f3dbba56aae846cf7f986a0a5f37fc9971a58e3217cca26dffee8655f3025bd61776683feecdde546fa88f"
     "b881d619a8ec2daf092079a850340f6af41b2dd11d9935bb06c2253bdbd32a6fb8bd5317d3c9c3be5b683e7fd636"
     "6e1816895664d8ee312eca47ecf862be009d9df699a7d2f515c69e3093fd50a3babe9ebaeab6267086a3185a908e"
     "a29af8eecf81e2be7c9c2ae33cb2380c73af264d24961b5c7711b0289e1a095f2966656ead1fed95b6c33d7082c3"
     "868f1f7b706f9442ddb76e3582f73e4839a0a110dbb78e9cfcc5", "F"),
    ("sha256", 0x10001,  # F (3 - Signature changed)
     "4ce993829f7b8112277cedbf8b4ec59244cd7ef79a7bad09cfdbd1109a1a7348d7f472e57cd69853cf4070c2d66e"
     "5ce20f37e2eb623547e154265f167d92a3f03caf84eca981ffe3cb45728d0c10ae43e9b44d09eee346cbe297bee7"
     "3fb021ece5df72a10ec4df4a85539926137ce23c3a0b685826cdd150e1f4978bc6bc16c4",
     "29865f133c69122e1b309b299270b5d693db89c5192eca5c829c795db460cb1dad3d1f27d200790fab035c90c00b"
     "238384bb30ee30752425f2b7f424d71bea79993046100760f3fa3c6e019d025338c13940a97778ea67e6d6138d8e"
     "8ff601d2309f02762add479d85d25fa31bd1c89af97927dac2ddf818cfe2179548db4da69c163d8cbf5f9c98ea33"
     "957022a52d6f33b19bbd3d05f40f2dfd49d999184cf5f9bc69fc1b21359c3c85ddebb6936c4f49015026539e8c4a"
     "ad2dd3a3b4ba309021fb317348d12b560ec608b74f812e3b74e4c8407765f30d6d03a5c20db821adc4c844018d57"
     "fb5364d0e7c3d55816782200ddf92b13dc2e0d4665b4cf3e1059", "F"),
    ("sha256", 0x10001,  # F (4 - Format of the EM is incorrect - hash moved to left)
     "c801a9270165955fa4d85fd502c0e6be0c91e1c453ef734f331300034a6f3e8a2f958f9361558e1a7e25e7eab6c7"
     "6d617e256674898029f2f4c9ec0dc14fd716869b5d886698cb4841f8212b28d222b91490a731d70838cd52e9dd46"
     "e959329b34dcba0ff77875705517b59f402c2d4d34994b0325d1c865b6397db7abd578a0",
     "290d0d444ee458777b5fdc3207d37054407c0dfa6806296869d3ec402a18209a3d06eb63d995293697e8c0a0e724"
     "89bfc9132857d6c7a17f4852e4e573a48d2a2a127fdd270092f5029d976b060a570c90d685bd2325d80c9867a3b2"
     "45455545bfae8cf87cff314f4d0a968229446dbf24adcd2a52ef9abd30b4746c2e04c0fdf52655427eb03bf63fdb"
     "208c6a776a3852052ac225eb33d7246f7ba624723f9c22abaf6d2f9219181ca62e44bb53a9ce8b45e7c6d742586a"
     "234e5de66df4ffbf7bc9e7f815a7d5aadb2f727f3151afa6ff48f6090d9fe08c8b0f1505598ca4a4ccbde6ab0f87"
     "b43059065097c737e53dc17f200c3a54b00d709a5b8bdce80f2e", "F"),
    ("sha256", 0x10001,  # F (1 - Message changed)
     "2466a246feda6fa5cee22c2f33ed9d643c1f6824d9f327719225bc7678cfe4c85cd210ed4077701b0b5650418177"
     "a74c71b8eda3306e2ef3474f5d326990eadea84a9686e822878c932997298e01f2b16c42e019e21bdfb67b3df547"
     "8df444366c97df1bdd23dc82ce23abee44d3a61e9484e88ed642634197b52dbece451b59",
     "79c3b93019bdb8a6d6a79e813e4d96928f730afc010657b1eb870f2891219de5fbd464fce97b2bda12a9d84a3d5c"
     "120c660ed0f70457e223809b26a996afab7c23143b411a1aae566d7e9d19d278044567b5064bc918bb101cadc7a5"
     "21c31c5e1962a7437d8f799ee6a76fc2f0a6733cfcb63246b1a864bb14ae70daf848824da565892d750af7c5da6e"
     "02e4889143a746e7e58b562d19cd3cf3d97795e50e1dcfa26d43f00357c92f01b327718d6cd292498dd29d0d8304"
     "08b568b2c91541a76b21b5d4efea46bc128d9c4aea4e9f60a4a601c876736bf9312a00a2bd81b4ca5d8e37ab2c79"
     "dacbe7d8e6abcc4691db64649cdff212f467a9d805b2c38cd031", "F"),
    ("sha256", 0x10001,  # F (5 - Format of the EM is incorrect - 00 on end of pad removed)
     "ecb6731a006eb273f6c5404a2e2d1faa5232f7afdff5b69be1dc7927fe88af17b5077b11e84b5baf98db08d3f1c9"
     "9d3b86e4fa55dd2e6b542e91858368cd51d975b5adcebf9bee6ef309caac05b276f874a70b14cfce2e237891f003"
     "a8d3f3dcb328cff98d45b3d78db5507c72cef20aa4e4f094bcbc47304543824ec480dd48",
     "8831265bcd54bf33d8c46cbd48052e9357c31afee92276b1b744e2521da9b83968e9ca90446064d8f174b248f64e"
     "792f91f4fae15252688e0f8ad38b28a532ddc7dc59e77d81b7a51dda2df2f2cbd5195c87b66db297b74296d4058f"
     "d00a060377dc1ec286c21e4f84c17ef315d443e89912e6b5d5f7d4ade31cc2b1aaaebcf09aaca20041b5f9b799b5"
     "b532391f85fd236ff3fa794baf4b25a2a188b0746728f1cfe0816b37d8dd648c53d76b81ee42ce27bf07baa27016"
     "b82c9ef3e1f5523ded7d35622d4986a6699b261f483e9b68b9c99e17e4aeb1c7baa84be1177264894ed5aab8592d"
     "faaa652898b37aec28c19d154df27956f604bb6a30d0964d4e97", "F"),
    ("sha384", 0x10001,
     "752fbf49ae63c7853b3ef6f52ed324e53867925bd5d4c49dc42b93f3ba9d7eae579c4169593da98f10e1a61e1214"
     "a2aa2fb511a4a75849dc9be89445c29184f85ddc877c6d1cbb45230a047a98ac5bfcbe7b69a397c454cba44fd90f"
     "a13f9b546f39ba0a52c8a8ae5c0038932962f8e3cd00c1e00be28c70c8a787d9be6f69c9",
     "80d7286710e5f165eeb63d2936e8e313ac5999bd297d35590c2b6ffaa4b7b7ed30003f0b83c1d1996c8593a37bc5"
     "d7b501a3d126ac6124779a23718497002d9dd2ce891b83d185e333af05460c6deb65a509640f775a0d3c70e55112"
     "c2e4af19f4ccec7af9ebb34226164f1b47d50b8ecc1dc3e0fc09aa15abfce5aa3998b5c2b1fde261c35eb43220f0"
     "d64529f723801d7faff841faba8709f6ea7751f30428dfc58045c84995107ee013ca4a84f65b99adde1abdefb542"
     "8f834ac8da04dafb9beaf1813f73a4bff2ec94120e3a702aed1184c387ebda2abf1959970724299b9a05f4ad313d"
     "91beb5344fe1fe13b3fc3386c279f031c77d74bdc9bc97e22455", "P"),
)
RSA_ALG = derw.seq(derw.oid("1.2.840.113549.1.1.1"), b"\x05\x00")  # rsaEncryption, NULL


def _digest(name, msg):
    return (hashlib.sha256 if name == "sha256" else sha384)(msg).digest()


def _spki(n, e, alg=RSA_ALG):
    return derw.seq(alg, derw.tlv(0x03, b"\x00" + derw.seq(derw.uint(n), derw.uint(e))))


def test_nist_sigver15_2048():
    for i, (name, e, msg, sig, result) in enumerate(VECTORS):
        key = rsa.PublicKey(N, e)
        got = rsa.verify_pkcs1(key, name, _digest(name, unhexlify(msg)), unhexlify(sig))
        eq(got, result == "P", "vector %d (%s, Result = %s)" % (i, name, result))


def test_wrong_hash_or_scheme_fails():
    name, e, msg, sig, _ = VECTORS[0]
    key = rsa.PublicKey(N, e)
    d = _digest(name, unhexlify(msg))
    s = unhexlify(sig)
    eq(rsa.verify_pkcs1(key, "sha384", sha384(unhexlify(msg)).digest(), s), False, "SHA-384")
    eq(rsa.verify_pss(key, "sha256", d, s), False, "as PSS")
    eq(rsa.verify_pkcs1(key, name, d, s[1:]), False, "short signature")
    eq(rsa.verify_pkcs1(key, name, d, N.to_bytes(256, "big")), False, "signature = n")
    eq(rsa.verify_pkcs1(key, name, d, bytes(256)), False, "zero signature")
    raises(ValueError, rsa.verify_pkcs1, key, "sha256", d[:20], s, contains="not a sha256")
    raises(ValueError, rsa.verify_pkcs1, key, "sha1", d, s, contains="sha256, sha384 or sha512")


def test_spki_parsing():
    name, e, msg, sig, _ = VECTORS[0]
    key = rsa.PublicKey.from_spki(_spki(N, e))
    eq((key.n, key.e, key.bits, key.size), (N, e, 2048, 256), "key")
    true(rsa.verify_pkcs1(key, name, _digest(name, unhexlify(msg)), unhexlify(sig)), "verifies")
    pss = derw.seq(derw.oid("1.2.840.113549.1.1.10"))  # id-RSASSA-PSS key, no parameters
    eq(rsa.PublicKey.from_spki(_spki(N, e, pss)).n, N, "RSASSA-PSS key")
    ec = derw.seq(derw.oid("1.2.840.10045.2.1"), derw.oid("1.2.840.10045.3.1.7"))
    raises(CertificateError, rsa.PublicKey.from_spki, _spki(N, e, ec), contains="is not RSA")
    raises(CertificateError, rsa.PublicKey.from_spki, _spki(N, e)[:-1], contains="truncated")
    raises(CertificateError, rsa.PublicKey.from_spki, _spki(N, e) + b"\x00",
           contains="trailing bytes")


def test_key_checks():
    raises(CertificateError, rsa.PublicKey, N >> 1024, 0x10001, contains="1024 bits")
    raises(CertificateError, rsa.PublicKey, N << 2050 | 1, 0x10001, contains="4098 bits")
    raises(CertificateError, rsa.PublicKey, N + 1, 0x10001, contains="odd")
    for e in (1, 2, 0x10000, N):
        raises(CertificateError, rsa.PublicKey, N, e, contains="exponent")
    eq(rsa.PublicKey(N << 2048 | 1, 3).bits, 4096, "4096 bits")
    negative = derw.seq(RSA_ALG, derw.tlv(0x03, b"\x00" + derw.seq(b"\x02\x01\x80", derw.uint(3))))
    raises(CertificateError, rsa.PublicKey.from_spki, negative, contains="negative")
