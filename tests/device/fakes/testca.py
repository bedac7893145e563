# A certificate authority for device tests, on the device itself: X.509 v3 certificates signed
# ECDSA-SHA256 with a P-256 test key (upcert.derw + upcert.p256), and a PKCS#10 reader that
# checks a CSR's signature. Test keys only, made from fixed seeds.
import hashlib
import time
from binascii import b2a_base64

from upcert import der, derw, p256
from upcert.der import BIT_STRING, INTEGER, SEQUENCE

ECDSA_SHA256 = b"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02"  # RFC 5758 §3.2
SHA1_RSA = b"\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x05\x05\x00"  # AWS refuses it


def key(seed):
    """A P-256 test key from a seed string (never a real key)."""
    d = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big") % (p256.N - 1) + 1
    return p256.Key(d)


def name(cn):
    """Name with one CN (RFC 5280 §4.1.2.4), UTF8String."""
    atv = derw.seq(b"\x06\x03\x55\x04\x03", derw.tlv(0x0C, cn.encode()))
    return derw.seq(derw.tlv(0x31, atv))


def _time(t):
    # UTCTime through 2049, GeneralizedTime after (RFC 5280 §4.1.2.5); t in unix seconds.
    g = time.gmtime(t)
    if g[0] < 2050:
        return derw.tlv(0x17, b"%02d%02d%02d%02d%02d%02dZ" % ((g[0] % 100,) + tuple(g[1:6])))
    return derw.tlv(0x18, b"%04d%02d%02d%02d%02d%02dZ" % tuple(g[:6]))


def pem(der_bytes, label="CERTIFICATE"):
    """PEM text of DER bytes, 64-character lines."""
    b64 = b2a_base64(der_bytes).strip().decode()
    lines = ["-----BEGIN %s-----" % label]
    for i in range(0, len(b64), 64):
        lines.append(b64[i : i + 64])
    lines.append("-----END %s-----\n" % label)
    return "\n".join(lines)


class TestCa:
    """A CA named cn with a P-256 key from seed; issue() signs device certificates."""

    def __init__(self, cn="upcert test CA", seed="ca"):
        self.cn = cn
        self.key = key(seed)
        self.serial = 0x1000

    def issue(self, cn, point, not_before, not_after, alg=ECDSA_SHA256, issuer=None):
        """DER certificate for the public point (65 bytes) valid not_before..not_after (unix s)."""
        self.serial += 1
        tbs = derw.seq(
            b"\xa0\x03\x02\x01\x02",  # version v3
            derw.uint(self.serial),
            alg,
            name(issuer or self.cn),
            derw.seq(_time(not_before), _time(not_after)),
            name(cn),
            derw.seq(derw.EC_ALG, derw.tlv(BIT_STRING, b"\x00" + point)),
        )
        r, s = self.key.sign_digest(hashlib.sha256(tbs).digest())
        sig = p256.signature_der(r, s)
        return derw.seq(tbs, alg, derw.tlv(BIT_STRING, b"\x00" + sig))

    def cert(self, not_before=1700000000, not_after=2500000000):
        """The CA's own (self-signed) certificate, DER."""
        return self.issue(self.cn, self.key.public_point(), not_before, not_after)


def read_csr(text):
    """(subject Name DER, public point) of a PEM CSR whose ECDSA-SHA256 signature verifies;
    ValueError otherwise (RFC 2986 §4)."""
    data = der.pem_to_der(text, "CERTIFICATE REQUEST")
    buf, s, e = der.single(data)
    is_, ie = der.expect(buf, s, e, SEQUENCE, "info")
    vs, ve = der.expect(buf, is_, ie, INTEGER, "version")
    ns, ne = der.expect(buf, ve, ie, SEQUENCE, "subject")
    ps, pe = der.expect(buf, ne, ie, SEQUENCE, "spki")
    as_, ae = der.expect(buf, ps, pe, SEQUENCE, "algorithm")
    bs, be = der.expect(buf, ae, pe, BIT_STRING, "key")
    point = bytes(der.read_bits(buf, bs, be))
    als, ale = der.expect(buf, ie, e, SEQUENCE, "signatureAlgorithm")
    if bytes(buf[ie:ale]) != ECDSA_SHA256:
        raise ValueError("CSR not signed ecdsa-with-SHA256")
    ss, se = der.expect(buf, ale, e, BIT_STRING, "signature")
    sig = der.read_bits(buf, ss, se)
    b, s2, e2 = der.single(sig)
    rs, re_ = der.expect(b, s2, e2, INTEGER, "r")
    s3, e3 = der.expect(b, re_, e2, INTEGER, "s")
    r = int.from_bytes(der.read_uint_bytes(b, rs, re_), "big")
    sv = int.from_bytes(der.read_uint_bytes(b, s3, e3), "big")
    digest = hashlib.sha256(bytes(buf[s:ie])).digest()
    if not p256.verify_digest(point, digest, r, sv):
        raise ValueError("CSR signature does not verify")
    return bytes(buf[ve:ne]), point
