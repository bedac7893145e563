# PKCS#10 certificate signing request (RFC 2986) for a P-256 key, signed ecdsa-with-SHA256
# through a signer (p256.Key or a secure element), and its PEM form for AWS CreateCertificateFromCsr.
# p256 is not imported: request_info() and signed() let a caller with little RAM hold this module
# and the P-256 code one at a time (newkey.py).
import hashlib
from binascii import b2a_base64

from micropython import const

from upcert import derw

SET = const(0x31)  # DER tag (X.690 §8.1.2)
_BIT_STRING = const(0x03)

_UTF8 = const(0x0C)
_PRINTABLE = const(0x13)
# Subject attributes: name -> (last arc of id-at 2.5.4.x, upper bound in characters, string tag).
# Arcs from X.520; bounds (ub-*) and string types from RFC 5280 Appendix A.1: country and
# serialNumber are PrintableString, the others DirectoryString, written as UTF8String (§4.1.2.6).
_ATTRS = {
    "CN": (3, 64, _UTF8),
    "serialNumber": (5, 64, _PRINTABLE),
    "C": (6, 2, _PRINTABLE),
    "L": (7, 128, _UTF8),
    "ST": (8, 128, _UTF8),
    "O": (10, 64, _UTF8),
    "OU": (11, 64, _UTF8),
}
_PRINTABLE_CHARS = const(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?"
)
# ecdsa-with-SHA256, parameters absent (RFC 5758 §3.2).
_SIG_ALG = const(b"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02")
_EXT_REQ = const("1.2.840.113549.1.9.14")  # PKCS#9 extensionRequest (RFC 2985 §5.4.2)


def _rdn(attr, value):
    # RelativeDistinguishedName with one AttributeTypeAndValue (RFC 5280 §4.1.2.4).
    spec = _ATTRS.get(attr)
    if spec is None:
        raise ValueError(
            "unknown subject attribute %r: use one of %s" % (attr, ", ".join(sorted(_ATTRS)))
        )
    arc, bound, tag = spec
    if not isinstance(value, str) or not 0 < len(value) <= bound:
        raise ValueError(
            "subject %s must be a str of 1 to %d characters, got %r" % (attr, bound, value)
        )
    if tag == _PRINTABLE:
        for ch in value:
            if ch not in _PRINTABLE_CHARS:
                raise ValueError(
                    "subject %s=%r: %r is not allowed in a PrintableString (A-Z a-z 0-9 and "
                    "space ' ( ) + , - . / : = ?)" % (attr, value, ch)
                )
        if attr == "C" and not ("A" <= value[0] <= "Z" and "A" <= value[1] <= "Z"):
            raise ValueError("subject C=%r: want a two-letter ISO 3166 code like 'DE'" % value)
    atv = derw.seq(b"\x06\x03\x55\x04" + bytes((arc,)), derw.tlv(tag, value.encode()))
    return derw.tlv(SET, atv)


def _extensions(exts):
    # [0] { Attribute { extensionRequest, SET { Extensions } } } (RFC 2986 §4.1, RFC 5280 §4.1).
    out = []
    for item in exts:
        try:
            oid, critical, value = item
        except (TypeError, ValueError):
            raise ValueError(
                "extension must be (oid, critical, value_der), got %r" % (item,)
            ) from None
        if not isinstance(value, (bytes, bytearray)):
            raise ValueError("extension %s: value must be the DER bytes of extnValue" % oid)
        out.append(
            derw.seq(derw.oid(oid), b"\x01\x01\xff" if critical else b"", derw.tlv(0x04, value))
        )
    return derw.seq(derw.oid(_EXT_REQ), derw.tlv(SET, derw.seq(*out)))


def build(signer, subject, *, extensions=None):
    """DER CertificationRequest (RFC 2986 §4) for signer's P-256 public key.

    signer: an object with public_point() -> 65 bytes 04||X||Y and sign_digest(digest32) ->
    (r, s), e.g. upcert.p256.Key or a secure-element driver. subject: list of (attribute, value)
    pairs, in order, attribute one of CN, O, OU, C, ST, L, serialNumber, e.g.
    [("CN", "dev1"), ("O", "Acme")]. extensions: optional list of (dotted OID, critical bool,
    extnValue DER) put in a PKCS#9 extensionRequest attribute. ValueError on bad input.
    """
    info = request_info(signer.public_point(), subject, extensions)
    return signed(info, *signer.sign_digest(hashlib.sha256(info).digest()))


def request_info(point, subject, extensions=None):
    """DER CertificationRequestInfo (RFC 2986 §4.1) for the public point (65 bytes 04||X||Y):
    what the signature covers (its SHA-256). subject, extensions: as build()."""
    if not isinstance(subject, (list, tuple)):
        raise ValueError("subject must be a list of (attribute, value) pairs, got %r" % (subject,))
    rdns = []
    for pair in subject:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError("subject entries must be (attribute, value) pairs, got %r" % (pair,))
        rdns.append(_rdn(pair[0], pair[1]))
    if len(point) != 65 or point[0] != 4:
        raise ValueError("signer.public_point() must return 65 bytes 04||X||Y")
    return derw.seq(
        b"\x02\x01\x00",  # version v1(0)
        derw.seq(*rdns),
        derw.seq(derw.EC_ALG, derw.tlv(_BIT_STRING, b"\x00" + point)),  # RFC 5480 §2
        derw.tlv(0xA0, _extensions(extensions) if extensions else b""),
    )


def signed(info, r, s):
    """DER CertificationRequest: info (request_info()) with the ECDSA signature (r, s) of its
    SHA-256, as ECDSA-Sig-Value (RFC 3279 §2.2.3)."""
    sig = derw.seq(derw.uint(r), derw.uint(s))
    return derw.seq(info, _SIG_ALG, derw.tlv(_BIT_STRING, b"\x00" + sig))


def pem(der):
    """PEM text of a DER request: '-----BEGIN CERTIFICATE REQUEST-----', 64-character lines
    (RFC 7468 §7), as AWS CreateCertificateFromCsr and Fleet Provisioning expect."""
    if not der:
        raise ValueError("pem: empty DER")
    b64 = b2a_base64(der).strip().decode()
    lines = ["-----BEGIN CERTIFICATE REQUEST-----"]
    for i in range(0, len(b64), 64):
        lines.append(b64[i : i + 64])
    lines.append("-----END CERTIFICATE REQUEST-----\n")
    return "\n".join(lines)
