# Server certificate path validation for upcert's own TLS client: RFC 5280 §6.1 (simplified as
# verify() says) and host names per RFC 6125 §6.4. Loaded only with that client.

from binascii import hexlify

from micropython import const

from upcert.certlean import Cert, error, items, oid, tlv, uint
from upcert.clock import iso
from upcert.errors import CLOCK, SERVER, CertificateError

# TLS alerts (RFC 5246 §7.2.2) for ChainError.alert.
BAD_CERTIFICATE = const(42)
UNSUPPORTED_CERTIFICATE = const(43)
CERTIFICATE_EXPIRED = const(45)  # "has expired or is not currently valid"
CERTIFICATE_UNKNOWN = const(46)
ILLEGAL_PARAMETER = const(47)
UNKNOWN_CA = const(48)
_MAX_PATH = const(4)  # certificates in a path, the trust anchor included
_MAX_DER = const(8192)  # bytes per certificate
_BOOLEAN = const(0x01)
_INTEGER = const(0x02)
_BIT_STRING = const(0x03)
_OID = const(0x06)
_SEQUENCE = const(0x30)
_NULL = b"\x05\x00"
_DNS = const(0x82)  # GeneralName dNSName [2] IA5String (RFC 5280 §4.2.1.6)
_IP = const(0x87)  # GeneralName iPAddress [7] OCTET STRING
_DIGITAL_SIGNATURE = const(0x80)  # KeyUsage bit 0 (RFC 5280 §4.2.1.3), first octet
_KEY_CERT_SIGN = const(0x04)  # KeyUsage bit 5
# Extensions understood here (RFC 5280 §4.2), in the order _extensions() numbers them: basic
# constraints, key usage, extended key usage, subject alternative name, SKI, AKI.
_KNOWN = (b"U\x1d\x13", b"U\x1d\x0f", b"U\x1d%", b"U\x1d\x11", b"U\x1d\x0e", b"U\x1d#")
_SERVER_AUTH = b"+\x06\x01\x05\x05\x07\x03\x01"  # id-kp-serverAuth 1.3.6.1.5.5.7.3.1
_ANY_EKU = b"U\x1d%\x00"  # anyExtendedKeyUsage 2.5.29.37.0
# OID arcs whose last byte picks the algorithm: PKCS #1 1.2.840.113549.1.1 (.8 MGF1, .10 PSS,
# .11-.13 sha256/384/512WithRSAEncryption, RFC 4055 §5), ecdsa-with-SHA2 1.2.840.10045.4.3
# (.2 SHA-256, .3 SHA-384, RFC 5758 §3.2), hash algorithms 2.16.840.1.101.3.4.2 (.1-.3).
_PKCS1 = b"*\x86H\x86\xf7\r\x01\x01"
_ECDSA = b"*\x86H\xce=\x04\x03"
_SHA2 = b"`\x86H\x01e\x03\x04\x02"
_HASHES = ("sha256", "sha384", "sha512")


def tbs(c):
    """c's tbsCertificate DER, the bytes the signature covers (memoryview; c: certlean.Cert)."""
    return memoryview(c.der)[c._at[0] : c._at[1]]


def sig_alg_der(c):
    """Content of c's signature AlgorithmIdentifier: the OID's TLV, then the parameters' (e.g.
    RSASSA-PSS-params, RFC 4055 §3.1), as a memoryview."""
    return memoryview(c.der)[c._at[2] : c._at[3]]


def issuer_der(c):
    """c's issuer Name DER (memoryview); a chain compares it byte for byte with the issuing
    certificate's subject_der()."""
    return memoryview(c.der)[c._at[4] : c._at[5]]


def subject_der(c):
    """c's subject Name DER (memoryview)."""
    return memoryview(c.der)[c._at[6] : c._at[7]]


class ChainError(CertificateError):
    """The server's certificate chain is not trusted: ChainError(message, alert, reason=SERVER).
    .alert: the TLS alert to send (RFC 5246 §7.2.2, the constants above); .reason: SERVER, or
    CLOCK when the clock is not trusted so validity could not be judged."""

    def __init__(self, message, alert, reason=SERVER):
        super().__init__(message, reason)
        self.alert = alert


def verify(chain, roots, hostname, now, trusted_clock=True):
    """Validate the server's Certificate message as a TLS client must; return the leaf
    (certlean.Cert, kept over chain[0]'s buffer, not copied) or raise ChainError (.alert
    says which TLS alert applies). ValueError for a hostname that is no name (empty, "*", a
    malformed IPv6 literal).

    chain: the DER certificates the server sent (bytes or memoryview), leaf first (RFC 5246
    §7.4.2), then intermediates in any order; unrelated ones are skipped and a root is allowed.
    roots: trust anchors (DER). hostname: the name dialled (str): a DNS name, or an IPv4/IPv6
    literal matched against iPAddress entries only. now: seconds, port epoch; trusted_clock:
    False refuses (reason CLOCK) instead of judging validity.

    The path runs from the leaf through the sent certificates to an anchor whose subject equals
    the issuer name (byte equality of the DER, simpler than RFC 5280 §7.1) and whose subject key
    id equals the authority key id, when both are present; the first candidate is taken, with no
    backtracking. At most 4 certificates with the anchor, 8 KB each. Every certificate and the
    anchor must be valid at `now`. Sent CA certificates need cA, keyCertSign (if keyUsage is
    present), their pathLenConstraint (self-issued ones are counted too) and no unknown critical
    extension; an anchor is trusted as is (its signature and unknown extensions are not looked
    at) but its basicConstraints and keyUsage, when present, are obeyed as a CA's. A CA with
    extendedKeyUsage must allow serverAuth too (as browsers require). Policies and name
    constraints are not processed (critical ones are refused), revocation is not checked. The leaf
    needs digitalSignature (if keyUsage is present), serverAuth or anyExtendedKeyUsage (if
    extendedKeyUsage is present) and a subjectAltName matching hostname: the subject CN is never
    used (RFC 6125 §6.4.4), so a certificate without subjectAltName is refused. A leaf equal to
    an anchor is trusted as is. Signatures: RSA PKCS #1 v1.5 and PSS (2048-4096 bits) with
    SHA-256/384/512, ECDSA P-256 with SHA-256/384; P-384 keys are refused as unsupported.
    """
    path, anchor = _walk(chain, roots, hostname, now, trusted_clock)
    # Signatures last: they are the slow part. Each sent CA is dropped once it is checked.
    for k in range(len(path) if anchor is not path[0] else 0):
        _signed_by(path[k], path[k + 1] if k + 1 < len(path) else anchor)
        if k:
            path[k] = None
    return path[0]


def walk(chain, roots, hostname, now, trusted_clock=True):
    """verify() but for the signatures, for a caller that checks them once this module and the
    certificate reader are out of RAM (upcert's TLS client): (the leaf's key, the signatures to
    check), plain data. The key: (type, bits, public key, RSA exponent or None), as key()
    gives it; the signatures: a list for sigs.path(), whose signed data and signature values
    are views into chain's buffers."""
    path, anchor = _walk(chain, roots, hostname, now, trusted_clock)
    todo = []
    n = len(path)
    for k in range(n if anchor is not path[0] else 0):
        c = path[k]
        i = path[k + 1] if k + 1 < n else anchor
        todo.append((_read(_sig_alg, c), tbs(c), c.signature, key(i), c.subject_cn,
                     i.subject_cn))
    return key(path[0]), todo


def key(c):
    """(key type, bits, public key, RSA exponent or None) of c, as sigs.py takes it."""
    return c.key_type, c.key_bits, c.public_key, c.key_exp


def _walk(chain, roots, hostname, now, trusted_clock):
    # verify() up to the signatures: (path, anchor)
    if not chain:
        raise ChainError("the server sent no certificate", BAD_CERTIFICATE)
    if not hostname or "*" in hostname:
        raise ValueError("hostname %r: want the name dialled" % hostname)
    ip = _ip(hostname)
    host = None if ip else hostname.lower().rstrip(".").encode()
    path, anchor = _build(chain, roots)
    if not trusted_clock:
        raise ChainError("clock not trusted: cannot judge validity", CERTIFICATE_UNKNOWN, CLOCK)
    n = len(path)
    for k in range(n + (anchor is not path[0])):
        c = path[k] if k < n else anchor
        v = c.validity(now)
        if v != "valid":
            raise ChainError("%r is %s (valid %s..%s, now %s)" % (
                c.subject_cn, v.replace("_", " "), iso(c.not_before), iso(c.not_after),
                iso(now)), CERTIFICATE_EXPIRED)
        if k:
            _check_ca(c, _read(_extensions, c, None, None, k == n), k - 1, k == n)
        else:
            _check_leaf(c, _read(_extensions, c, host, ip, False), hostname)
    return path, anchor


def _build(chain, roots):
    # (path, anchor): path is the leaf then sent CA certificates, each issued by the next, the
    # last one by the anchor (a parsed root; the leaf itself when it equals a root).
    leaf = _parse(chain[0], 0)
    for r in roots:
        if len(r) == len(leaf.der) and memoryview(r) == leaf.der:
            return [leaf], leaf
    path = [leaf]
    used = 1  # bit i: chain[i] is on the path
    c = leaf
    while True:
        anchor = _issuer(c, roots, -1)[1]
        if anchor:
            return path, anchor
        i, c2 = _issuer(c, chain, used)
        if c2 is None or len(path) == _MAX_PATH - 1:
            why = "no trust anchor" if c2 is None else "more than %d certificates" % _MAX_PATH
            raise ChainError("%s for %r (issuer %r)" % (why, c.subject_cn, c.issuer_cn),
                              UNKNOWN_CA)
        used |= 1 << i
        c = c2
        path.append(c)


def _check_leaf(c, ext, hostname):
    # The server's own certificate: usable for an ECDHE handshake, and for hostname.
    _, _, ku, eku, san = ext
    why = None
    if ku is not None and not ku & _DIGITAL_SIGNATURE:
        why = "keyUsage lacks digitalSignature"
    elif eku is False:
        why = "extendedKeyUsage lacks serverAuth"
    if why:
        raise ChainError("server certificate %r: %s" % (c.subject_cn, why),
                          UNSUPPORTED_CERTIFICATE)
    if san is None:
        why = "has no subjectAltName (the CN is not used, RFC 6125 §6.4.4)"
    elif not san:
        why = "is not for %r" % hostname
    if why:
        raise ChainError("server certificate %r %s" % (c.subject_cn, why), BAD_CERTIFICATE)


def _check_ca(c, ext, below, anchor):
    # A CA certificate with `below` CA certificates under it on the path: RFC 5280 §6.1.4 (k),
    # (l)-(m), (n). An anchor without basicConstraints (an X.509 v1 root) passes.
    ca, plen, ku, eku, _ = ext
    if not ca and (not anchor or ca is False):
        why = "is not a CA (basicConstraints cA)"
    elif plen is not None and below > plen:
        why = "allows %d CA certificate(s) below it, has %d (pathLenConstraint)" % (plen, below)
    elif ku is not None and not ku & _KEY_CERT_SIGN:
        why = "keyUsage lacks keyCertSign"
    elif eku is False:  # as browsers do: an issuer restricted to other purposes
        why = "extendedKeyUsage lacks serverAuth"
    else:
        return
    raise ChainError("issuer %r %s" % (c.subject_cn, why), UNKNOWN_CA)


def _parse(data, i):
    if len(data) > _MAX_DER:
        raise ChainError("certificate %d: %d bytes, over %d" % (i, len(data), _MAX_DER),
                          UNSUPPORTED_CERTIFICATE)
    try:
        return Cert(memoryview(data))
    except CertificateError as exc:
        raise ChainError("certificate %d: %s" % (i, exc), BAD_CERTIFICATE) from None


def _issuer(c, certs, used):
    # (index, Certificate) of the first of certs not in `used` (bits; -1: certs are the anchors)
    # whose subject is c's issuer and whose key id matches (RFC 5280 §4.2.1.1), or (0, None).
    # The others are dropped as soon as they are read.
    name = issuer_der(c)
    for i in range(len(certs)):
        if used >= 0 and used >> i & 1:
            continue
        d = _parse(certs[i], i) if used >= 0 else Cert(certs[i])
        if subject_der(d) == name and not (c.aki and d.ski and c.aki != d.ski):
            return i, d
        d = None
    return 0, None


def _read(fn, c, *args):
    # fn(c, *args), with a malformed part of c (CertificateError) made a bad_certificate.
    try:
        return fn(c, *args)
    except ChainError:
        raise
    except CertificateError as exc:
        raise ChainError("%r: %s" % (c.subject_cn, exc), BAD_CERTIFICATE) from None


def _extensions(c, host, ip, anchor):
    # (cA (None: no basicConstraints), pathLenConstraint or None, KeyUsage's first octet or None,
    # extendedKeyUsage allows serverAuth (None: absent), a subjectAltName matches host or ip
    # (None: no SAN, or neither given)). ChainError for an extension c must be refused for.
    ca = plen = ku = eku = san = None
    seen = 0
    for x, crit, v in c.extensions():
        k = 0
        for y in _KNOWN:
            if x == y:
                break
            k += 1
        if k == len(_KNOWN):
            if crit and not anchor:  # RFC 5280 §4.2: MUST reject
                raise ChainError("%r has an unknown critical extension %s" % (
                    c.subject_cn, oid(x, 0, len(x))), UNSUPPORTED_CERTIFICATE)
            continue
        if seen >> k & 1:  # RFC 5280 §4.2: at most one instance of an extension
            raise ChainError("%r repeats an extension" % c.subject_cn, BAD_CERTIFICATE)
        seen |= 1 << k
        if k == 0:  # BasicConstraints ::= SEQUENCE { cA DEFAULT FALSE, pathLen OPTIONAL }
            _, s, e = tlv(v, 0, len(v), _SEQUENCE)
            ca = False
            for t, fs, fe in items(v, s, e):
                if t == _BOOLEAN and fe - fs == 1:
                    ca = v[fs] != 0
                elif t == _INTEGER and fe > fs and not v[fs] & 0x80:
                    plen = int.from_bytes(uint(v, fs, fe), "big")
                else:
                    raise error("bad basicConstraints", fs)
        elif k == 1:  # KeyUsage ::= BIT STRING; first octet after the unused-bits count
            _, s, e = tlv(v, 0, len(v), _BIT_STRING)
            ku = v[s + 1] if e - s > 1 else 0
        elif k == 2:  # ExtKeyUsageSyntax ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId
            _, s, e = tlv(v, 0, len(v), _SEQUENCE)
            eku = False
            for t, fs, fe in items(v, s, e):
                if t != _OID:
                    raise error("bad extendedKeyUsage", fs)
                if v[fs:fe] == _SERVER_AUTH or v[fs:fe] == _ANY_EKU:
                    eku = True
        elif k == 3 and (host or ip):  # GeneralNames ::= SEQUENCE OF GeneralName
            _, s, e = tlv(v, 0, len(v), _SEQUENCE)
            san = False
            for t, fs, fe in items(v, s, e):
                if t == _DNS and host and _dns_match(host, v[fs:fe]):
                    san = True
                elif t == _IP and ip and v[fs:fe] == ip:
                    san = True
    return ca, plen, ku, eku, san


def _dns_match(host, pat):
    # RFC 6125 §6.4.3: host (lowercase ASCII bytes, no final dot) against one dNSName, ASCII
    # case-insensitively. A wildcard only as the whole left-most label, standing for exactly
    # one label, with at least two labels after it (no "*.com"); no partial wildcards ("f*o").
    pat = bytes(pat).lower()
    if pat[-1:] == b".":
        pat = pat[:-1]
    if pat == host:
        return True
    rest = pat[1:]
    if pat[:2] != b"*." or rest.count(b".") < 2 or b"*" in rest:
        return False
    i = host.find(b".")
    return i > 0 and host[i:] == rest


def _ip(host):
    # The 4 or 16 octets of an IPv4 dotted quad or an IPv6 literal (RFC 4291 §2.2, without the
    # embedded IPv4 form), as an iPAddress SAN holds them; None for a DNS name.
    if ":" not in host:
        parts = host.split(".")
        if len(parts) != 4:
            return None
        for p in parts:
            if not (0 < len(p) < 4 and p.isdigit() and int(p) < 256):
                return None
        return bytes([int(p) for p in parts])
    halves = host.strip("[]").split("::")
    groups = [h.split(":") if h else [] for h in halves]
    fill = 8 - len(groups[0]) - (len(groups[1]) if len(halves) == 2 else 0)
    if len(halves) > 2 or (fill < 1 if len(halves) == 2 else fill):
        raise ValueError("hostname %r: not an IPv6 address" % host)
    out = bytearray()
    for g in groups[0] + ["0"] * fill + (groups[1] if len(halves) == 2 else []):
        if not 0 < len(g) < 5 or g.strip("0123456789abcdefABCDEF"):
            raise ValueError("hostname %r: not an IPv6 address" % host)
        out += int(g, 16).to_bytes(2, "big")
    return bytes(out)


def _hash(buf, s, e):
    # Name of the SHA-2 hash of the AlgorithmIdentifier at buf[s:e] (parameters NULL or absent,
    # RFC 4055 §2.1); None for any other algorithm.
    _, s, e = tlv(buf, s, e, _SEQUENCE)
    _, os_, oe = tlv(buf, s, e, _OID)
    x = buf[os_:oe]
    if x[:-1] == _SHA2 and 0 < x[-1] <= len(_HASHES) and buf[oe:e] in (b"", _NULL):
        return _HASHES[x[-1] - 1]
    return None


def _sig_alg(c):
    # (scheme, hash name, PSS salt length) of c's signature algorithm, or ChainError
    # (unsupported). RFC 4055 §5 (PKCS #1 v1.5 parameters: NULL; RFC 4055 §3.1:
    # RSASSA-PSS-params, whose SHA-1 defaults are refused), RFC 5758 §3.2 (ECDSA: absent).
    a = sig_alg_der(c)
    _, s, e = tlv(a, 0, len(a), _OID)
    x, last, params = a[s : e - 1], a[e - 1], a[e:]
    if x == _PKCS1 and 11 <= last <= 13 and params in (b"", _NULL):
        return "pkcs1", _HASHES[last - 11], 0
    if x == _ECDSA and 2 <= last <= 3 and not params:
        return "ecdsa", _HASHES[last - 2], 0
    if x == _PKCS1 and last == 10:
        h = mgf = None
        salt = 20
        _, ps, pe = tlv(a, e, len(a), _SEQUENCE)
        for t, fs, fe in items(a, ps, pe):
            if t == 0xA0:  # hashAlgorithm [0]
                h = _hash(a, fs, fe)
            elif t == 0xA1:  # maskGenAlgorithm [1]: {id-mgf1, hash AlgorithmIdentifier}
                _, ms, me = tlv(a, fs, fe, _SEQUENCE)
                _, os_, oe = tlv(a, ms, me, _OID)
                if a[os_:oe] == _PKCS1 + b"\x08":
                    mgf = _hash(a, oe, me)
            elif t == 0xA2 or t == 0xA3:  # saltLength [2], trailerField [3] (must be 1)
                _, is_, ie = tlv(a, fs, fe, _INTEGER)
                n = int.from_bytes(uint(a, is_, ie), "big")
                if t == 0xA2:
                    salt = n
                elif n != 1:
                    h = None
        if h and mgf == h:  # MGF1 with another hash than the message's: not supported
            return "pss", h, salt
    raise ChainError("%r: signature algorithm %s (parameters %s) unsupported" % (
        c.subject_cn, oid(a, s, e), hexlify(a[e:]).decode()), UNSUPPORTED_CERTIFICATE)


def verify_signed(leaf, scheme, data, sig):
    """True if sig is the server's signature of data (ServerKeyExchange, RFC 5246 §7.4.3) by the
    key of leaf (verify()'s result) under TLS SignatureScheme `scheme` (RFC 8446 §4.2.3 code
    points: 0x0403/0x0503 ECDSA SHA-256/384, 0x0401/0x0501/0x0601 PKCS #1 v1.5, 0x0804-0x0806
    RSA-PSS rsae with a hash-length salt); False if it does not verify or the key is of another
    type. ChainError for a scheme or key that is not supported."""
    from upcert import sigs

    alg = sigs.scheme(scheme)
    if alg is None:
        raise ChainError("signature scheme 0x%04x unsupported" % scheme, ILLEGAL_PARAMETER)
    k = key(leaf)
    why = sigs.unfit(alg, k)
    if why and why[1]:
        raise ChainError("%s (%r)" % (why[0], leaf.subject_cn), UNSUPPORTED_CERTIFICATE)
    if why:
        return False
    try:
        return sigs.check(alg, k, data, sig)
    except (ValueError, CertificateError):
        return False


def _signed_by(c, issuer):
    # ChainError unless issuer's key signed c.
    from upcert import sigs

    bad = sigs.path([(_read(_sig_alg, c), tbs(c), c.signature, key(issuer), c.subject_cn,
                      issuer.subject_cn)])
    if bad:
        raise ChainError(bad[1], bad[0])
