# Minimal DER (X.690) reader over memoryview: TLV headers with bounds checks, plus the few
# primitive decoders X.509 needs. Pure (bytes in, values out); every failure is a
# CertificateError carrying a reason and the byte offset where it was found.
from binascii import a2b_base64, hexlify

from micropython import const

from upcert.errors import CertificateError

SEQUENCE = const(0x30)
SET = const(0x31)
INTEGER = const(0x02)
BIT_STRING = const(0x03)
OID = const(0x06)
UTC_TIME = const(0x17)
GENERALIZED_TIME = const(0x18)
_MAX_LEN_BYTES = const(4)
# Longest OID we decode: real ones are < 30 bytes (2.25.<UUID> is 20); the bound keeps a hostile
# OID from building huge integers or thousands of arcs (found by tests/fuzz).
_MAX_OID_BYTES = const(64)


def error(reason, pos, detail=""):
    """Build a CertificateError reading '<reason> at byte <pos>[: detail]'."""
    msg = "%s at byte %d" % (reason, pos)
    return CertificateError(msg + ": " + detail if detail else msg)


def tlv(buf, pos=0, end=None):
    """Read one TLV header at `pos`; return (tag, value_start, value_end).

    The value must lie within [pos, end) (end defaults to len(buf)). X.690 §8.1.2 (identifier),
    §8.1.3 (length); DER forbids the indefinite form and non-minimal lengths (§10.1).
    """
    if end is None:
        end = len(buf)
    if pos + 2 > end:
        raise error("truncated", pos, "no room for tag and length, %d byte(s) left" % (end - pos))
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise error("unsupported tag", pos, "high tag number form 0x%02x" % tag)
    n = buf[pos + 1]
    p = pos + 2
    if n & 0x80:
        n &= 0x7F
        if n == 0:
            raise error("indefinite length", pos + 1, "not allowed in DER")
        if n > _MAX_LEN_BYTES:
            raise error("length too long", pos + 1, "%d length bytes (max 4)" % n)
        if p + n > end:
            raise error("truncated", p, "length needs %d byte(s)" % n)
        if buf[p] == 0:
            raise error("non-minimal length", pos + 1, "leading zero byte (DER, X.690 10.1)")
        length = 0
        for i in range(n):
            length = (length << 8) | buf[p + i]
        if length < 0x80:
            raise error("non-minimal length", pos + 1, "%d needs no long form (X.690 10.1)" % length)
        p += n
    else:
        length = n
    if length > end - p:
        raise error(
            "truncated", p, "length %d runs past the end (%d byte(s) left)" % (length, end - p)
        )
    return tag, p, p + length


def expect(buf, pos, end, tag, what):
    """Like tlv() but the tag must be `tag`; `what` names the field for the message."""
    try:
        t, s, e = tlv(buf, pos, end)
    except CertificateError as exc:
        raise CertificateError("%s (reading %s)" % (exc, what)) from None
    if t != tag:
        raise error(
            what + (": expected SEQUENCE" if tag == SEQUENCE else ": expected tag 0x%02x" % tag),
            pos,
            "got tag 0x%02x" % t,
        )
    return s, e


def single(data, tag=SEQUENCE, what="DER"):
    """Parse `data` as exactly one element with `tag`; return (memoryview, start, end).

    Trailing bytes after the element are an error (one element expected).
    """
    buf = memoryview(data)
    s, e = expect(buf, 0, len(buf), tag, what)
    if e != len(buf):
        raise error("trailing bytes", e, "%d byte(s) after the element" % (len(buf) - e))
    return buf, s, e


def children(buf, start, end):
    """Yield (tag, value_start, value_end) for each element in buf[start:end]."""
    while start < end:
        t, s, e = tlv(buf, start, end)
        yield t, s, e
        start = e


def read_uint_bytes(buf, s, e):
    """Content of a (non-negative) INTEGER without its leading 0x00 pad bytes (X.690 §8.3)."""
    if s == e:
        raise error("bad INTEGER", s, "empty")
    while e - s > 1 and buf[s] == 0:
        s += 1
    return bytes(buf[s:e])


def read_oid(buf, s, e):
    """Decode an OBJECT IDENTIFIER (X.690 §8.19) into its dotted string."""
    if s == e:
        raise error("bad OID", s, "empty")
    if e - s > _MAX_OID_BYTES:
        raise error("bad OID", s, "%d bytes (max %d)" % (e - s, _MAX_OID_BYTES))
    arcs = []
    v = 0
    for i in range(s, e):
        b = buf[i]
        if v == 0 and b == 0x80:
            raise error("bad OID", i, "non-minimal arc")
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(v)
            v = 0
    if buf[e - 1] & 0x80:
        raise error("bad OID", e - 1, "last arc unterminated")
    first = arcs[0]
    top = 0 if first < 40 else 1 if first < 80 else 2
    arcs[0] = first - 40 * top
    return "%d." % top + ".".join([str(a) for a in arcs])


def read_bits(buf, s, e):
    """Content of a BIT STRING with no unused bits (keys and signatures; X.690 §8.6)."""
    if s == e or buf[s] != 0:
        raise error("bad BIT STRING", s, "unused bits not 0")
    return bytes(buf[s + 1 : e])


def _num(buf, s, n):
    v = 0
    for i in range(s, s + n):
        c = buf[i] - 48
        if c < 0 or c > 9:
            raise error("bad time", i, "expected a digit")
        v = v * 10 + c
    return v


def read_time(buf, tag, s, e):
    """UTCTime or GeneralizedTime -> (y, m, d, H, M, S), UTC.

    RFC 5280 §4.1.2.5.1: UTCTime is YYMMDDHHMMSSZ, YY >= 50 -> 19YY else 20YY.
    RFC 5280 §4.1.2.5.2: GeneralizedTime is YYYYMMDDHHMMSSZ (no fractions).
    """
    n = e - s
    if n != (13 if tag == UTC_TIME else 15 if tag == GENERALIZED_TIME else 0) or buf[e - 1] != 0x5A:
        raise error(
            "bad time", s, "tag 0x%02x, %d bytes: want YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ" % (tag, n)
        )
    y = _num(buf, s, n - 11)
    if n == 13:
        y += 1900 if y >= 50 else 2000
    t = (y,) + tuple([_num(buf, p, 2) for p in range(e - 11, e - 1, 2)])
    if not (1 <= t[1] <= 12 and 1 <= t[2] <= 31 and t[3] < 24 and t[4] < 60 and t[5] < 60):
        raise error("bad time", s, "field out of range %r" % (t,))
    return t


def read_str(buf, tag, s, e):
    """Decode a DirectoryString (RFC 5280 §4.1.2.4): UTF8/Printable/IA5, Teletex as Latin-1,
    BMP (UCS-2) and Universal (UCS-4) big-endian."""
    w = 2 if tag == 0x1E else 4 if tag == 0x1C else 1 if tag == 0x14 else 0
    try:
        if not w:
            _utf8_strict(buf, s, e)
            return str(bytes(buf[s:e]), "utf-8")
        if (e - s) % w:
            raise ValueError
        # Re-encode as UTF-8 into one buffer: a list of 1-char strings costs ~40x the input.
        out = bytearray()
        i = s
        while i < e:
            c = 0
            for j in range(i, i + w):
                c = (c << 8) | buf[j]
            i += w
            if w == 2 and 0xD800 <= c < 0xDC00 and i < e and 0xDC <= buf[i] < 0xE0:
                # A UTF-16 surrogate pair: what encoders (and pyca/cryptography) write for
                # characters past U+FFFF in a BMPString.
                c = 0x10000 + ((c - 0xD800) << 10) + ((buf[i] - 0xDC) << 8 | buf[i + 1])
                i += 2
            # A lone surrogate is not a character (Unicode §3.9); past U+10FFFF, CPython's chr()
            # raises OverflowError, not ValueError (found by tests/fuzz).
            if 0xD800 <= c < 0xE000 or c > 0x10FFFF:
                raise ValueError
            out.extend(chr(c).encode())
        return str(out, "utf-8")
    except ValueError:  # UnicodeError is a ValueError
        raise error("bad string", s, "tag 0x%02x does not decode" % tag) from None


def _utf8_strict(buf, s, e):
    # RFC 3629 §4 well-formed UTF-8. MicroPython's decoder lets overlong forms, surrogates and
    # code points past U+10FFFF through (CPython's does not): checking here makes ports agree.
    while s < e:
        b = buf[s]
        n = 0 if b < 0x80 else 1 if 0xC2 <= b < 0xE0 else 2 if 0xE0 <= b < 0xF0 else 3
        if n == 3 and not 0xF0 <= b < 0xF5 or s + n >= e:
            raise ValueError
        lo = 0xA0 if b == 0xE0 else 0x90 if b == 0xF0 else 0x80
        hi = 0x9F if b == 0xED else 0x8F if b == 0xF4 else 0xBF
        for i in range(s + 1, s + n + 1):
            if not lo <= buf[i] <= hi:
                raise ValueError
            lo, hi = 0x80, 0xBF
        s += n + 1


def split_certs(data):
    """Split a concatenation of DER certificates (e.g. /upcert.d/roots.der) into a list of bytes."""
    buf = memoryview(data)
    out = []
    pos = 0
    while pos < len(buf):
        t, s, e = tlv(buf, pos)
        if t != SEQUENCE:
            raise error("not a certificate: expected SEQUENCE", pos, "got tag 0x%02x" % t)
        out.append(bytes(buf[pos:e]))
        pos = e
    return out


def pem_to_der(text, label="CERTIFICATE"):
    """DER bytes of the first '-----BEGIN <label>-----' block in PEM `text` (str or bytes)."""
    if isinstance(text, str):
        text = text.encode()
    begin = b"-----BEGIN " + label.encode() + b"-----"
    end = b"-----END " + label.encode() + b"-----"
    i = text.find(begin)
    j = text.find(end, i + 1)
    if i < 0 or j < 0:
        raise CertificateError("PEM: no '%s' ... '%s' block found" % (begin.decode(), end.decode()))
    body = text[i + len(begin) : j]
    try:
        der = a2b_base64(b"".join(body.split()))
    except ValueError as exc:
        raise CertificateError("PEM %s: bad base64 (%s)" % (label, exc)) from None
    if not der:
        raise CertificateError("PEM %s: block is empty" % label)
    return der


def hexstr(b):
    """Lowercase hex string of bytes."""
    return hexlify(b).decode()
