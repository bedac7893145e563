# The certificate issued for a rotation (step 4, rotate.py), read into the facts its checks
# need (vet.py), with those of the trust anchors; in RAM only meanwhile. The certificate reader
# (certlean) and the checks' code are never in RAM together: the check step sets the peak of
# a rotation's heap.
import hashlib

from micropython import const

from upcert.tlsconn import Ident

_ECDSA_SHA256 = const("1.2.840.10045.4.3.2")  # ecdsa-with-SHA256 (RFC 5758 §3.2)


def read(pem, roots):
    """(ident, DER, facts, anchors) of the issued certificate pem (DER or PEM; CertificateError
    when unreadable) and the trust anchors roots (DER list). facts: (public key, signature OID,
    not_before, not_after, issuer CN, authority key id, (SHA-256 of tbsCertificate, r, s) for
    an ECDSA-SHA256 signature, else None); anchors: [(subject CN, subject key id, key type,
    bits, P-256 point or None)]. The Certs are read in frames of their own: MicroPython's GC
    scans a frame's stale slots, and a Cert held there would keep the reader (its class)."""
    c = _new(pem)
    return c[0], c[1], c[2], [_anchor(d) for d in roots]


def _new(pem):
    from upcert.certlean import load

    new = load(pem)
    sig = _signature(new) if new.sig_oid == _ECDSA_SHA256 else None
    return Ident(new), new.der, (new.public_key, new.sig_oid, new.not_before, new.not_after,
                                 new.issuer_cn, new.aki, sig)


def _anchor(der):
    from upcert.certlean import Cert

    c = Cert(der)
    return (c.subject_cn, c.ski, c.key_type, c.key_bits,
            c.public_key if c.key_type == "EC" else None)


def _signature(cert):
    # (SHA-256 of tbsCertificate's DER (RFC 5280 §4.1.1.3), r, s of its Ecdsa-Sig-Value
    # (RFC 3279 §2.2.3)).
    from upcert.certlean import error, tlv, uint

    digest = hashlib.sha256(memoryview(cert.der)[cert._at[0] : cert._at[1]]).digest()
    b = cert.signature
    _, s, e = tlv(b, 0, len(b), 0x30)
    _, rs, re_ = tlv(b, s, e, 2)
    _, ss, se = tlv(b, re_, e, 2)
    if se != len(b):
        raise error("trailing bytes", se)
    r = int.from_bytes(uint(b, rs, re_), "big")
    return digest, r, int.from_bytes(uint(b, ss, se), "big")
