# Device tests for upcert.csr: the PKCS#10 structure read back with upcert.der, the signature
# checked with p256.verify_digest, PEM wrapping, and the subject/extension input errors.
import hashlib

from checks import eq, raises, true
from upcert import csr, der, derw, p256
from upcert.der import BIT_STRING, INTEGER, OID, SEQUENCE, SET

OIDS = {
    "CN": "2.5.4.3",
    "serialNumber": "2.5.4.5",
    "C": "2.5.4.6",
    "L": "2.5.4.7",
    "ST": "2.5.4.8",
    "O": "2.5.4.10",
    "OU": "2.5.4.11",
}


class Signer:
    """Only the signer interface (what a secure element offers), recording what it signed."""

    def __init__(self, key):
        self._key = key
        self.digests = []

    def public_point(self):
        return self._key.public_point()

    def sign_digest(self, digest32):
        self.digests.append(digest32)
        return self._key.sign_digest(digest32)


def _parse(data):
    # CertificationRequest (RFC 2986 §4.2) -> (info bytes, info fields, sig alg OID, r, s).
    buf, s, e = der.single(data, SEQUENCE, "CSR")
    is_, ie = der.expect(buf, s, e, SEQUENCE, "certificationRequestInfo")
    info_der = bytes(buf[s:ie])
    as_, ae = der.expect(buf, ie, e, SEQUENCE, "signatureAlgorithm")
    os_, oe = der.expect(buf, as_, ae, OID, "algorithm")
    eq(oe, ae, "ecdsa-with-SHA256 has no parameters (RFC 5758 §3.2)")
    alg = der.read_oid(buf, os_, oe)
    bs, be = der.expect(buf, ae, e, BIT_STRING, "signature")
    eq(be, e, "nothing after the signature")
    sig = der.read_bits(buf, bs, be)
    sb, ss, se = der.single(sig)
    (_, rs, re_), (_, ts, te) = list(der.children(sb, ss, se))
    r = int.from_bytes(der.read_uint_bytes(sb, rs, re_), "big")
    sv = int.from_bytes(der.read_uint_bytes(sb, ts, te), "big")
    fields = list(der.children(buf, is_, ie))
    return buf, info_der, fields, alg, r, sv


def _subject(buf, s, e):
    out = []
    for t, rs, re_ in der.children(buf, s, e):
        eq(t, SET, "RDN is a SET")
        ((t2, as_, ae),) = list(der.children(buf, rs, re_))
        os_, oe = der.expect(buf, as_, ae, OID, "attribute type")
        vt, vs, ve = der.tlv(buf, oe, ae)
        out.append((der.read_oid(buf, os_, oe), vt, der.read_str(buf, vt, vs, ve)))
    return out


def test_structure_and_signature():
    key = p256.generate()
    signer = Signer(key)
    subject = [
        ("CN", "dev-1"),
        ("O", "Acme Ü"),
        ("OU", "fleet"),
        ("C", "DE"),
        ("ST", "Bayern"),
        ("L", "München"),
        ("serialNumber", "SN-0042"),
    ]
    data = csr.build(signer, subject)
    buf, info, fields, alg, r, s = _parse(data)
    eq(alg, "1.2.840.10045.4.3.2", "ecdsa-with-SHA256")
    eq([f[0] for f in fields], [INTEGER, SEQUENCE, SEQUENCE, 0xA0], "info fields")
    eq(bytes(buf[fields[0][1] : fields[0][2]]), b"\x00", "version v1 (0)")
    got = _subject(buf, fields[1][1], fields[1][2])
    want = [(OIDS[a], 0x13 if a in ("C", "serialNumber") else 0x0C, v) for a, v in subject]
    eq(got, want, "subject in order, C and serialNumber PrintableString, others UTF8String")
    spki = bytes(buf[fields[2][1] - 2 : fields[2][2]])
    eq(spki, b"\x30\x59" + derw.EC_ALG + b"\x03\x42\x00" + key.public_point(), "SPKI")
    eq(fields[3][1], fields[3][2], "attributes [0] empty")
    eq(signer.digests, [hashlib.sha256(info).digest()], "signed SHA-256 of the info, once")
    true(p256.verify_digest(key.public_point(), signer.digests[0], r, s), "signature verifies")
    eq(csr.build(key, subject), data, "deterministic (RFC 6979), Key works as its own signer")


def test_extension_request():
    key = p256.Key(12345)
    san = b"\x30\x06\x82\x04dev1"  # GeneralNames { dNSName "dev1" }
    data = csr.build(
        key,
        [("CN", "dev1")],
        extensions=[("2.5.29.17", False, san), ("2.5.29.19", True, b"\x30\x00")],
    )
    buf, _, fields, _, _, _ = _parse(data)
    a = fields[3]
    ((t, s, e),) = list(der.children(buf, a[1], a[2]))
    os_, oe = der.expect(buf, s, e, OID, "attrType")
    eq(der.read_oid(buf, os_, oe), "1.2.840.113549.1.9.14", "extensionRequest")
    ss, se = der.expect(buf, oe, e, SET, "attrValues")
    xs, xe = der.expect(buf, ss, se, SEQUENCE, "Extensions")
    exts = []
    for _, es, ee in der.children(buf, xs, xe):
        parts = list(der.children(buf, es, ee))
        exts.append(
            (
                der.read_oid(buf, parts[0][1], parts[0][2]),
                len(parts),
                bytes(buf[parts[-1][1] : parts[-1][2]]),
            )
        )
    eq(exts, [("2.5.29.17", 2, san), ("2.5.29.19", 3, b"\x30\x00")], "critical only when set")
    for exts, msg in (
        ([("2.5.29.17", san)], "(oid, critical, value_der)"),
        ([("2.5.x", False, san)], "bad OID '2.5.x'"),
        ([("3.5", False, san)], "bad OID"),
        ([("2.5.29.17", False, "x")], "DER bytes of extnValue"),
    ):
        raises(ValueError, lambda x=exts: csr.build(key, [], extensions=x), contains=msg)


def test_pem():
    key = p256.Key(777)
    data = csr.build(key, [("CN", "a" * 64), ("O", "o" * 64), ("ST", "s" * 128)])
    text = csr.pem(data)
    lines = text.split("\n")
    eq(lines[0], "-----BEGIN CERTIFICATE REQUEST-----", "header")
    eq(lines[-2:], ["-----END CERTIFICATE REQUEST-----", ""], "footer and final newline")
    body = lines[1:-2]
    true(
        len(body) > 2 and all(len(x) == 64 for x in body[:-1]) and 0 < len(body[-1]) <= 64,
        "64-character lines",
    )
    eq(der.pem_to_der(text, "CERTIFICATE REQUEST"), data, "round trip")
    raises(ValueError, csr.pem, b"", contains="empty")


def test_subject_errors():
    key = p256.Key(99)
    cases = (
        ([("CN", "x" * 65)], "CN must be a str of 1 to 64"),
        ([("CN", "")], "1 to 64"),
        ([("CN", b"dev1")], "must be a str"),
        ([("L", "l" * 129)], "1 to 128"),
        ([("email", "a@b")], "unknown subject attribute 'email'"),
        ([("cn", "dev1")], "use one of C, CN, L, O, OU, ST, serialNumber"),
        ([("C", "DEU")], "1 to 2"),
        ([("C", "de")], "two-letter ISO 3166"),
        ([("serialNumber", "a_b")], "'_' is not allowed in a PrintableString"),
        ([("CN",)], "(attribute, value) pairs"),
        ("CN=dev1", "subject must be a list"),
    )
    for subject, msg in cases:
        raises(ValueError, csr.build, key, subject, contains=msg)


def test_bad_signer():
    class Broken:
        def public_point(self):
            return b"\x04" * 64

        def sign_digest(self, d):
            raise AssertionError("must not be called")

    raises(ValueError, csr.build, Broken(), [("CN", "x")], contains="65 bytes 04||X||Y")


def test_empty_subject_allowed():
    buf, _, fields, _, _, _ = _parse(csr.build(p256.Key(5), []))
    eq(fields[1][1], fields[1][2], "empty Name (RFC 2986 allows it)")
