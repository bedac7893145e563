# X.509 v3 certificate reader (RFC 5280 §4.1): the fields a device needs to judge its identity
# (serial, names, validity, key, signature algorithm), parsed eagerly from DER; what path
# validation needs (tbsCertificate, raw names, extensions) is found by offset, read when asked.
import hashlib

from micropython import const

from upcert import der
from upcert.clock import utc_seconds
from upcert.der import BIT_STRING, INTEGER, OID, SEQUENCE, error
from upcert.errors import CertificateError
from upcert.sigalgs import SIG_ALGS

_CN = b"\x55\x04\x03"  # id-at-commonName 2.5.4.3, compared undecoded
_SKI = b"\x55\x1d\x0e"  # id-ce-subjectKeyIdentifier 2.5.29.14 (RFC 5280 §4.2.1.2)
_AKI = b"\x55\x1d\x23"  # id-ce-authorityKeyIdentifier 2.5.29.35 (RFC 5280 §4.2.1.1)
_BOOLEAN = const(0x01)
_OCTETS = const(0x04)  # OCTET STRING
_EC = "1.2.840.10045.2.1"
_RSA = ("1.2.840.113549.1.1.1", "1.2.840.113549.1.1.10")  # rsaEncryption, RSASSA-PSS (RFC 4055)
# Named curves (RFC 5480 §2.1.1.1) -> bits.
_CURVES = {"1.2.840.10045.3.1.7": 256, "1.3.132.0.34": 384, "1.3.132.0.35": 521}
# Signature algorithms -> the names AWS IoT accepts: the one table, in sigalgs.py.


def _cn(buf, s, e):
    # Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue), §4.1.2.4.
    # Returns the last CN (the most specific), or None.
    cn = None
    for t, rs, re_ in der.children(buf, s, e):
        if t != der.SET:
            raise error("bad Name: expected SET", rs)
        for t, as_, ae in der.children(buf, rs, re_):
            if t != SEQUENCE:
                raise error("bad Name: expected SEQUENCE", as_)
            os_, oe = der.expect(buf, as_, ae, OID, "attribute type")
            if buf[os_:oe] == _CN:
                vt, vs, ve = der.tlv(buf, oe, ae)
                cn = der.read_str(buf, vt, vs, ve)
    return cn


class Certificate:
    """A parsed X.509 certificate. `der` is the certificate's DER bytes.

    Attributes: serial (hex str), subject_cn, issuer_cn (str or None), not_before, not_after
    (seconds, port epoch), not_before_tuple, not_after_tuple ((y, m, d, H, M, S) UTC),
    key_type ("EC", "RSA" or the OID), key_bits, public_key (EC: 04||X||Y; RSA: modulus),
    key_exp (RSA public exponent, int; None for other keys), sig_alg (AWS name or dotted OID),
    sig_alg_aws_ok, signature (bytes), ski and aki (the subject's and the issuer's key
    identifiers, bytes, or None when absent or unreadable). `data` given as a memoryview is kept,
    not copied, and signature is then a memoryview into it: the buffer must not change while the
    Certificate is in use.
    Raises CertificateError naming what is wrong and where.
    """

    def __init__(self, data):
        view = isinstance(data, memoryview)
        self.der = data if view else bytes(data)
        # Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue } §4.1.1
        if self.der[:1] != b"\x30":
            raise error("not a certificate: expected SEQUENCE", 0, "got %r" % bytes(self.der[:1]))
        buf, s, e = der.single(self.der, SEQUENCE, "certificate")
        ts, te = der.expect(buf, s, e, SEQUENCE, "tbsCertificate")
        as_, ae = der.expect(buf, te, e, SEQUENCE, "signatureAlgorithm")
        outer_alg = bytes(buf[te:ae])
        ss, se = der.expect(buf, ae, e, BIT_STRING, "signatureValue")
        if se != e:
            raise error("trailing bytes", se, "inside Certificate")
        if ss == se or buf[ss]:
            raise error("bad BIT STRING", ss, "unused bits not 0")
        sig = buf[ss + 1 : se]  # a view into der when der is one (no copy)
        self.signature = sig if view else bytes(sig)
        self._tbs_fields(buf, ts, te, outer_alg)
        # Where the parts path validation reads are (offsets into der: a few ints, no copies):
        # tbsCertificate (what the issuer signed, §4.1.1.3), the signature AlgorithmIdentifier's
        # content, the issuer and subject Names, the extensions ([3] content; 0, 0 for none).
        # chain.py reads them (chain.tbs() ...): their names cost nothing where it is not loaded.
        self._at = (s, te) + self._at
        try:
            self._key_ids()
        except CertificateError:
            self.ski = self.aki = None  # read leniently: only the checks that use them

    def extensions(self):
        """Yield (oid, critical, value) per extension (RFC 5280 §4.1.2.9, §4.2): oid the OID's
        content octets, critical a bool, value extnValue's content (the extension's own DER),
        both memoryviews. Raises CertificateError for a malformed Extension."""
        buf = memoryview(self.der)
        s, e = self._at[8], self._at[9]
        if s == e:
            return
        # Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension
        s, p = der.expect(buf, s, e, SEQUENCE, "extensions")
        if p != e:
            raise error("trailing bytes", p, "after extensions")
        for t, xs, xe in der.children(buf, s, e):
            # Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }
            if t != SEQUENCE:
                raise error("extension: expected SEQUENCE", xs)
            os_, oe = der.expect(buf, xs, xe, OID, "extnID")
            t, vs, p = der.tlv(buf, oe, xe)
            crit = t == _BOOLEAN
            if crit:
                if p - vs != 1:
                    raise error("bad BOOLEAN", vs, "critical")
                crit = buf[vs] != 0
            else:
                p = oe
            vs, ve = der.expect(buf, p, xe, _OCTETS, "extnValue")
            if ve != xe:
                raise error("trailing bytes", ve, "inside Extension")
            yield buf[os_:oe], crit, buf[vs:ve]

    def _tbs_fields(self, buf, p, end, outer_alg):
        # TBSCertificate §4.1.2: [0] version, serial, signature, issuer, validity, subject, spki.
        t, s, e = der.tlv(buf, p, end)
        if t == 0xA0:
            vs, ve = der.expect(buf, s, e, INTEGER, "version")
            if ve != e or ve - vs != 1 or buf[vs] > 2:
                raise error("bad version", s)
            p = e
        s, p = der.expect(buf, p, end, INTEGER, "serialNumber")
        self.serial = der.hexstr(der.read_uint_bytes(buf, s, p)).lstrip("0") or "0"
        # signature AlgorithmIdentifier: must equal the outer one (§4.1.1.2).
        t, s, e = der.tlv(buf, p, end)
        at = (s, e)
        if buf[p:e] != outer_alg:
            raise error(
                "signature algorithm mismatch",
                p,
                "tbsCertificate vs Certificate (RFC 5280 4.1.1.2)",
            )
        os_, oe = der.expect(buf, s, e, OID, "signature algorithm")
        oid = der.read_oid(buf, os_, oe)
        self.sig_alg = SIG_ALGS.get(oid, oid)
        self.sig_alg_aws_ok = oid in SIG_ALGS
        s, p = der.expect(buf, e, end, SEQUENCE, "issuer")
        at += (e, p)
        self.issuer_cn = _cn(buf, s, p)
        # Validity ::= SEQUENCE { notBefore Time, notAfter Time } §4.1.2.5
        s, p = der.expect(buf, p, end, SEQUENCE, "validity")
        t, ts, te = der.tlv(buf, s, p)
        self.not_before_tuple = der.read_time(buf, t, ts, te)
        t, ts, te = der.tlv(buf, te, p)
        self.not_after_tuple = der.read_time(buf, t, ts, te)
        if te != p:
            raise error("trailing bytes", te, "inside Validity")
        self.not_before = utc_seconds(self.not_before_tuple)
        self.not_after = utc_seconds(self.not_after_tuple)
        n = p
        s, p = der.expect(buf, p, end, SEQUENCE, "subject")
        at += (n, p)
        self.subject_cn = _cn(buf, s, p)
        s, p = der.expect(buf, p, end, SEQUENCE, "subjectPublicKeyInfo")
        self._spki(buf, s, p)
        # issuerUniqueID [1], subjectUniqueID [2], extensions [3] (§4.1.2.8-9): checked for framing.
        self.ski = self.aki = None
        x = (0, 0)
        for t, s, e in der.children(buf, p, end):
            if t not in (0x81, 0xA1, 0x82, 0xA2, 0xA3):
                raise error("unexpected field in tbsCertificate", s, "tag 0x%02x" % t)
            if t == 0xA3:
                x = (s, e)
        self._at = at + x

    def _key_ids(self):
        for oid, _, v in self.extensions():
            if oid == _SKI:  # SubjectKeyIdentifier ::= OCTET STRING
                s, e = der.expect(v, 0, len(v), _OCTETS, "subjectKeyIdentifier")
                self.ski = bytes(v[s:e])
            elif oid == _AKI:  # AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] ... }
                s, e = der.expect(v, 0, len(v), SEQUENCE, "authorityKeyIdentifier")
                for t, ks, ke in der.children(v, s, e):
                    if t == 0x80:
                        self.aki = bytes(v[ks:ke])

    def _spki(self, buf, s, end):
        # SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, BIT STRING } §4.1.2.7
        as_, ae = der.expect(buf, s, end, SEQUENCE, "key algorithm")
        os_, oe = der.expect(buf, as_, ae, OID, "key algorithm")
        oid = der.read_oid(buf, os_, oe)
        bs, be = der.expect(buf, ae, end, BIT_STRING, "subjectPublicKey")
        key = der.read_bits(buf, bs, be)
        self.key_type, self.key_bits, self.public_key, self.key_exp = oid, None, key, None
        if oid == _EC:
            # ECParameters namedCurve (RFC 5480 §2.1.1); the key is the uncompressed point.
            t, cs, ce = der.tlv(buf, oe, ae)
            self.key_type = "EC"
            if t == OID:
                self.key_bits = _CURVES.get(der.read_oid(buf, cs, ce))
        elif oid in _RSA:
            # RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } (RFC 8017 A.1.1)
            ks, ke = der.expect(buf, bs + 1, be, SEQUENCE, "RSAPublicKey")
            ms, me = der.expect(buf, ks, ke, INTEGER, "RSA modulus")
            mod = der.read_uint_bytes(buf, ms, me)
            es, ee = der.expect(buf, me, ke, INTEGER, "RSA exponent")
            self.key_exp = int.from_bytes(der.read_uint_bytes(buf, es, ee), "big")
            self.key_type = "RSA"
            self.public_key = mod
            self.key_bits = len(mod) * 8 - 8 + _bitlen(mod[0])

    def cert_id(self):
        """AWS IoT certificateId: lowercase hex SHA-256 of the DER."""
        return der.hexstr(hashlib.sha256(self.der).digest())

    def days_left(self, now):
        """Days (float) from `now` (seconds, port epoch) to not_after; negative once expired."""
        return (self.not_after - now) / 86400

    def validity(self, now):
        """'valid', 'not_yet_valid' or 'expired' at `now`; both bounds inclusive (§4.1.2.5)."""
        if now < self.not_before:
            return "not_yet_valid"
        if now > self.not_after:
            return "expired"
        return "valid"


def _bitlen(b):
    n = 0
    while b:
        n += 1
        b >>= 1
    return n


def load(data):
    """Certificate from DER or PEM (bytes or str)."""
    if isinstance(data, str):
        data = data.encode()
    if not data:
        raise CertificateError("not a certificate: no data")
    if data[0] != 0x30 and bytes(data).find(b"-----BEGIN") >= 0:  # DER starts with SEQUENCE
        data = der.pem_to_der(data)
    return Certificate(data)
