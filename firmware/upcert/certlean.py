# Lean X.509 certificate reader (RFC 5280 §4.1) for the checks made while the device's RAM is at
# its fullest: a server's chain in upcert's TLS client (chain.py), the rotation's check of an
# issued certificate (rotate.py), the agent's own certificate and the trust anchors. Reads what
# those checks use straight from the DER, framing checked strictly (X.690 §8.1, §10.1); x509.py
# (with der.py) is the full reader for the host calls.
import hashlib
from binascii import a2b_base64, hexlify

from micropython import const

from upcert.clock import utc_seconds
from upcert.errors import CertificateError

_SEQ = const(0x30)
_INT = const(0x02)
_BITS = const(0x03)
_OCTETS = const(0x04)
_OID = const(0x06)
_CN = const(b"U\x04\x03")  # id-at-commonName 2.5.4.3
_SKI = const(b"U\x1d\x0e")  # id-ce-subjectKeyIdentifier 2.5.29.14 (RFC 5280 §4.2.1.2)
_AKI = const(b"U\x1d#")  # id-ce-authorityKeyIdentifier 2.5.29.35 (RFC 5280 §4.2.1.1)
_EC = const(b"*\x86H\xce=\x02\x01")  # id-ecPublicKey 1.2.840.10045.2.1 (RFC 5480 §2.1.1)
_PKCS1 = const(b"*\x86H\x86\xf7\r\x01\x01")  # .1 rsaEncryption, .10 RSASSA-PSS (RFC 4055)
# Named curves (RFC 5480 §2.1.1.1), OID content octets -> bits: P-256, P-384, P-521.
_CURVES = {b"*\x86H\xce=\x03\x01\x07": 256, b"+\x81\x04\x00\x22": 384, b"+\x81\x04\x00\x23": 521}


def error(why, pos):
    """CertificateError reading '<why> at byte <pos>'."""
    return CertificateError("%s at byte %d" % (why, pos))


def tlv(b, p, end, tag=-1):
    """(tag, start, end) of the DER element at b[p:end]: one-byte tags only, definite minimal
    lengths (X.690 §8.1.3, §10.1) within end; with tag >= 0 the tag must be that one.
    CertificateError otherwise."""
    if p + 2 > end:
        raise error("truncated", p)
    t = b[p]
    n = b[p + 1]
    s = p + 2
    if t & 0x1F == 0x1F or n == 0x80:  # high tag number form; indefinite length
        raise error("unsupported tag or length", p)
    if n > 0x80:
        k = n - 0x80
        if k > 4 or s + k > end or not b[s]:
            raise error("bad length", p + 1)
        n = int.from_bytes(bytes(b[s : s + k]), "big")
        s += k
        if n < 0x80:
            raise error("non-minimal length", p + 1)
    if n > end - s:
        raise error("truncated", s)
    if tag >= 0 and t != tag:
        raise error("expected tag 0x%02x, got 0x%02x" % (tag, t), p)
    return t, s, s + n


def items(b, s, e):
    """Yield (tag, start, end) for each element in b[s:e]."""
    while s < e:
        t, s, n = tlv(b, s, e)
        yield t, s, n
        s = n


def uint(b, s, e, copy=True):
    """Content of a non-negative INTEGER without its leading 0x00 pad bytes (bytes; copy False:
    a view into b)."""
    if s == e:
        raise error("bad INTEGER", s)
    while e - s > 1 and not b[s]:
        s += 1
    return bytes(b[s:e]) if copy else b[s:e]


def oid(b, s, e):
    """Dotted string of the OBJECT IDENTIFIER content b[s:e] (X.690 §8.19); at most 64 bytes,
    so a hostile one builds no huge number."""
    if s == e or e - s > 64 or b[e - 1] & 0x80:
        raise error("bad OID", s)
    arcs = []
    v = 0
    for i in range(s, e):
        x = b[i]
        if not v and x == 0x80:
            raise error("bad OID", i)
        v = v << 7 | x & 0x7F
        if not x & 0x80:
            arcs.append(v)
            v = 0
    top = min(arcs[0] // 40, 2)
    arcs[0] -= 40 * top
    return "%d." % top + ".".join([str(a) for a in arcs])


def _text(b, t, s, e):
    # A DirectoryString (RFC 5280 §4.1.2.4): UTF8/Printable/IA5 as UTF-8, Teletex as Latin-1,
    # BMP (UCS-2, with UTF-16 surrogate pairs) and Universal (UCS-4) big-endian.
    w = 2 if t == 0x1E else 4 if t == 0x1C else 1
    try:
        if w == 1 and t != 0x14:
            # RFC 3629 §4 well-formed UTF-8: MicroPython's decoder lets overlong forms,
            # surrogates and code points past U+10FFFF through (CPython's does not).
            i = s
            while i < e:
                x = b[i]
                n = 0 if x < 0x80 else 1 if 0xC2 <= x < 0xE0 else 2 if 0xE0 <= x < 0xF0 else 3
                if n == 3 and not 0xF0 <= x < 0xF5 or i + n >= e:
                    raise ValueError
                lo = 0xA0 if x == 0xE0 else 0x90 if x == 0xF0 else 0x80
                hi = 0x9F if x == 0xED else 0x8F if x == 0xF4 else 0xBF
                for j in range(i + 1, i + n + 1):
                    if not lo <= b[j] <= hi:
                        raise ValueError
                    lo, hi = 0x80, 0xBF
                i += n + 1
            return str(bytes(b[s:e]), "utf-8")
        if (e - s) % w:
            raise ValueError
        out = bytearray()
        while s < e:
            c = int.from_bytes(bytes(b[s : s + w]), "big")
            s += w
            if w == 2 and 0xD800 <= c < 0xDC00 and s < e and 0xDC <= b[s] < 0xE0:
                c = 0x10000 + (c - 0xD800 << 10) + (b[s] - 0xDC << 8 | b[s + 1])
                s += 2
            if 0xD800 <= c < 0xE000 or c > 0x10FFFF:  # a lone surrogate is no character
                raise ValueError
            out += chr(c).encode()
        return str(out, "utf-8")
    except ValueError:  # UnicodeError is one
        raise error("bad string", s) from None


def _cn(b, s, e):
    # Name ::= SEQUENCE OF RDN (SET OF AttributeTypeAndValue): the last CN, or None.
    cn = None
    for t, rs, re_ in items(b, s, e):
        if t != 0x31:
            raise error("bad Name", rs)
        for t, a, ae in items(b, rs, re_):
            if t != _SEQ:
                raise error("bad Name", a)
            _, os_, oe = tlv(b, a, ae, _OID)
            if b[os_:oe] == _CN:
                t, vs, ve = tlv(b, oe, ae)
                cn = _text(b, t, vs, ve)
    return cn


def _time(b, p, end):
    # (seconds in the port's epoch, end) of the UTCTime (YYMMDDHHMMSSZ, YY >= 50: 19YY) or
    # GeneralizedTime (YYYYMMDDHHMMSSZ) at p: RFC 5280 §4.1.2.5.
    t, s, e = tlv(b, p, end)
    n = e - s
    if n != (13 if t == 0x17 else 15 if t == 0x18 else 0) or b[e - 1] != 0x5A:
        raise error("bad time", s)
    f = []
    v = 0
    for i in range(s, e - 1):
        c = b[i] - 48
        if not 0 <= c <= 9:
            raise error("bad time", i)
        v = v * 10 + c
        if i == e - 12:  # the year's last digit; then two digits per field
            f.append(v + (0 if n == 15 else 1900 if v >= 50 else 2000))
            v = 0
        elif i > e - 12 and not (e - i) & 1:
            f.append(v)
            v = 0
    if not (1 <= f[1] <= 12 and 1 <= f[2] <= 31 and f[3] < 24 and f[4] < 60 and f[5] < 60):
        raise error("bad time", s)
    return utc_seconds(f), e


class Cert:
    """A certificate read for checking. Attributes: der (as given: a memoryview is kept, not
    copied, so it must not change meanwhile), subject_cn, issuer_cn (str or None), not_before,
    not_after (seconds, port epoch), key_type ("EC", "RSA" or the dotted OID), key_bits (None
    for another curve or key), public_key (EC: the point as sent, bytes; RSA: the modulus;
    another key: the BIT STRING's content; those two are views into der), key_exp (RSA
    exponent, else None), sig_oid (the signature algorithm's dotted OID; sigalgs.py has AWS's
    names), signature (a view into der), ski, aki (bytes; None when absent or unreadable), _at
    (offsets into der: tbsCertificate, the signature AlgorithmIdentifier's content, issuer and
    subject Names, the extensions' [3] content or 0, 0; chain.py reads them).
    CertificateError ('<what> at byte <n>') for anything malformed."""

    def __init__(self, data):
        self.der = data if isinstance(data, memoryview) else bytes(data)
        b = memoryview(self.der)
        # Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
        _, c, e = tlv(b, 0, len(b), _SEQ)
        _, s, te = tlv(b, c, e, _SEQ)
        _, p, ae = tlv(b, te, e, _SEQ)
        _, p, q = tlv(b, ae, e, _BITS)
        if q != len(b):  # q <= e <= len(b)
            raise error("trailing bytes", q)
        if p == q or b[p]:
            raise error("bad BIT STRING", p)
        self.signature = b[p + 1 : q]
        # TBSCertificate §4.1.2: [0] version, serial, signature, issuer, validity, subject, spki
        t, p, q = tlv(b, s, te)
        if t == 0xA0:
            _, s, p = tlv(b, p, q, _INT)
            if p != q or p - s != 1 or b[s] > 2:
                raise error("bad version", s)
        else:
            q = s
        _, s, p = tlv(b, q, te, _INT)  # serialNumber
        uint(b, s, p)
        _, s, q = tlv(b, p, te, _SEQ)  # signature: the outer one's twin (§4.1.1.2)
        if b[p:q] != b[te:ae]:
            raise error("signature algorithm mismatch", p)
        at = (c, te, s, q)
        _, s, p = tlv(b, s, q, _OID)
        self.sig_oid = oid(b, s, p)
        _, s, p = tlv(b, q, te, _SEQ)  # issuer
        self.issuer_cn = _cn(b, s, p)
        at += (q, p)
        _, s, q = tlv(b, p, te, _SEQ)  # validity
        self.not_before, s = _time(b, s, q)
        self.not_after, s = _time(b, s, q)
        if s != q:
            raise error("trailing bytes", s)
        _, s, p = tlv(b, q, te, _SEQ)  # subject
        self.subject_cn = _cn(b, s, p)
        at += (q, p)
        _, s, p = tlv(b, p, te, _SEQ)  # subjectPublicKeyInfo
        self._key(b, s, p)
        x = (0, 0)
        for t, s, q in items(b, p, te):  # issuerUniqueID [1], subjectUniqueID [2], extensions [3]
            if t not in (0x81, 0xA1, 0x82, 0xA2, 0xA3):
                raise error("unexpected field 0x%02x" % t, s)
            if t == 0xA3:
                x = (s, q)
        self._at = at + x
        self.ski = self.aki = None
        try:
            for o, _, v in self.extensions():
                if o == _SKI:  # SubjectKeyIdentifier ::= OCTET STRING
                    _, s, q = tlv(v, 0, len(v), _OCTETS)
                    self.ski = bytes(v[s:q])
                elif o == _AKI:  # SEQUENCE { keyIdentifier [0] OPTIONAL, ... }
                    _, s, q = tlv(v, 0, len(v), _SEQ)
                    for t, ks, ke in items(v, s, q):
                        if t == 0x80:
                            self.aki = bytes(v[ks:ke])
        except CertificateError:
            self.ski = self.aki = None  # read leniently: only the checks that use them

    def _key(self, b, s, end):
        # SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING } (§4.1.2.7)
        _, s, ae = tlv(b, s, end, _SEQ)
        _, s, p = tlv(b, s, ae, _OID)
        k = b[s:p]
        self.key_type = oid(b, s, p)
        _, s, e = tlv(b, ae, end, _BITS)
        if s == e or b[s]:
            raise error("bad BIT STRING", s)
        self.public_key = b[s + 1 : e]
        self.key_bits = self.key_exp = None
        if k == _EC:  # ECParameters namedCurve (RFC 5480 §2.1.1); the point as it is
            self.key_type = "EC"
            self.public_key = bytes(self.public_key)
            t, s, e = tlv(b, p, ae)
            if t == _OID:
                self.key_bits = _CURVES.get(bytes(b[s:e]))
        elif k[:-1] == _PKCS1 and k[-1] in (1, 10):
            # RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } (RFC 8017)
            _, s, e = tlv(b, s + 1, e, _SEQ)
            _, s, p = tlv(b, s, e, _INT)
            # A view: a trust anchor's 256-byte modulus is not copied each time it is read.
            n = self.public_key = uint(b, s, p, False)
            _, s, p = tlv(b, p, e, _INT)
            self.key_exp = int.from_bytes(uint(b, s, p), "big")
            self.key_type = "RSA"
            x = n[0]
            k = len(n) * 8 - 8
            while x:
                k += 1
                x >>= 1
            self.key_bits = k

    def extensions(self):
        """Yield (oid, critical, value) per extension (RFC 5280 §4.1.2.9): the OID's content
        octets, a bool, extnValue's content; memoryviews. CertificateError if malformed."""
        s, e = self._at[8], self._at[9]
        if s == e:
            return
        b = memoryview(self.der)
        _, s, p = tlv(b, s, e, _SEQ)  # Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension
        if p != e:
            raise error("trailing bytes", p)
        for t, x, xe in items(b, s, e):
            # Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }
            if t != _SEQ:
                raise error("bad Extension", x)
            _, s, o = tlv(b, x, xe, _OID)
            t, v, p = tlv(b, o, xe)
            crit = t == 0x01
            if crit:
                if p - v != 1:
                    raise error("bad BOOLEAN", v)
                crit = b[v] != 0
            else:
                p = o
            _, v, p = tlv(b, p, xe, _OCTETS)
            if p != xe:
                raise error("trailing bytes", p)
            yield b[s:o], crit, b[v:p]

    def cert_id(self):
        """AWS IoT certificateId: lowercase hex SHA-256 of the DER."""
        return hexlify(hashlib.sha256(self.der).digest()).decode()

    def validity(self, now):
        """'valid', 'not_yet_valid' or 'expired' at `now`; both bounds inclusive (§4.1.2.5)."""
        if now < self.not_before:
            return "not_yet_valid"
        if now > self.not_after:
            return "expired"
        return "valid"


def load(data):
    """Cert from DER or PEM (bytes or str; PEM: the first CERTIFICATE block)."""
    if isinstance(data, str):
        data = data.encode()
    if data[:1] != b"\x30":
        i = data.find(b"-----BEGIN CERTIFICATE-----")
        j = data.find(b"-----END", i + 1)
        if i < 0 or j < 0:
            raise CertificateError("not a certificate: neither DER nor PEM")
        try:
            # Straight from the PEM text: a2b_base64 skips the line breaks (MicroPython's and
            # CPython's alike), so no joined copy of the base64 (640 bytes for a P-256
            # certificate) is made beside the DER; after a rotation's key and CSR the heap
            # had no such block left in one piece (32-bit, 25-29 KB free in holes).
            data = a2b_base64(memoryview(data)[i + 27 : j])
        except ValueError:
            raise CertificateError("PEM: bad base64") from None
    return Cert(data)


def split(data):
    """The DER certificates concatenated in data (e.g. /upcert.d/roots.der), each checked with
    Cert: a list of bytes."""
    b = memoryview(data)
    out = []
    p = 0
    while p < len(b):
        _, _, e = tlv(b, p, len(b), _SEQ)
        out.append(bytes(b[p:e]))
        Cert(out[-1])
        p = e
    return out
