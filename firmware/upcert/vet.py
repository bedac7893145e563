# The checks of a certificate issued for a rotation (step 4, rotate.py; in RAM only meanwhile):
# for our new key, a signature algorithm AWS IoT accepts, valid now and not expiring before the
# one in use, an issuer among the trust anchors (or the current one's), and when that issuer has
# a P-256 key its signature verified on the device.
import hashlib

from upcert import drop
from upcert.clock import iso
from upcert.errors import CHECK, RotationError
from upcert.tlsconn import Ident


def checked(pem, point, cert, clock, roots):
    """The issued certificate (DER, or PEM) read and checked: (its tlsconn.Ident, DER) + check()'s
    result, or RotationError. The Ident spares the agent the certificate reader after the
    commit, when the heap is at its most fragmented. In a frame of its own: MicroPython's VM
    leaves popped values in a frame's stack slots, and the GC scans them; had the caller held
    the Cert, the certificate reader would stay in RAM (via its class) however it is dropped."""
    from upcert.certlean import load

    new = load(pem)
    return (Ident(new), new.der) + check(new, point, cert, clock.require_trusted(), roots)


def check(new, point, old, now, roots):
    """(issuer CN, how it was checked, signature to verify or None), or RotationError naming the
    first problem. The signature (issuer's point, digest, r, s) is for verify(), once the
    certificate reader has left RAM.

    new: certlean.Cert (issued); old: the identity in use (not_after, issuer_cn); point: our
    new public key (65 bytes 04||X||Y); now: trusted time (port epoch); roots: trust anchors
    (DER certificates).
    """
    from upcert.sigalgs import SIG_ALGS

    alg = SIG_ALGS.get(new.sig_oid)
    SIG_ALGS = None
    drop("sigalgs")  # before the trust anchors are read
    why = None
    if new.public_key != point:
        why = "is not for our new key"
    elif not alg:
        why = "signed %s: AWS IoT refuses it" % new.sig_oid
    elif new.validity(now) != "valid":
        why = "valid %s..%s, not now (%s)" % (iso(new.not_before), iso(new.not_after), iso(now))
    # >=, not >: certificates AWS issues from a CSR all expire 2049-12-31 (AWS IoT API reference,
    # CreateCertificateFromCsr).
    elif new.not_after < old.not_after:
        why = "expires %s, before the current one (%s)" % (iso(new.not_after), iso(old.not_after))
    if why:
        raise RotationError("issued certificate " + why, CHECK)
    # The issuer among the trust anchors (by CN): a P-256 one lets us verify the signature
    # (ECDSA-SHA256 only: MicroPython's hashlib has no SHA-384). Otherwise the issuer must be a
    # trust anchor or the current certificate's issuer, and its signature is not checked here
    # (RSA issuers such as AWS's own CA, or issuers whose certificate is not on the device).
    from upcert.certlean import Cert

    name = new.issuer_cn
    how = "as before"
    for d in roots:
        ca = Cert(d)
        if ca.subject_cn == name:
            # Same name, another key (an impostor CA): the issuer's key identifier says so
            # (RFC 5280 §4.2.1.1), for RSA issuers too, whose signature the device cannot check.
            if new.aki and ca.ski and new.aki != ca.ski:
                raise RotationError(
                    "issued certificate names issuer key %s, but trust anchor %r has key %s"
                    % (_hex(new.aki), name, _hex(ca.ski)), CHECK)
            if ca.key_bits == 256 and ca.key_type == "EC" and alg == "ECDSA-WITH-SHA256":
                return name, None, _signature(new, ca.public_key)
            how = "is a trust anchor (%s)" % ca.key_type
            break
    else:
        if name != old.issuer_cn:
            raise RotationError(
                "issuer %r is neither %r nor a trust anchor" % (name, old.issuer_cn), CHECK
            )
    return name, how + "; signature not verified on device", None


def _hex(b):
    from binascii import hexlify

    return hexlify(b[:8]).decode() + ("..." if len(b) > 8 else "")


def _signature(cert, point):
    # (point, SHA-256 of tbsCertificate's DER (RFC 5280 §4.1.1.3), r, s of its Ecdsa-Sig-Value
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
    return point, digest, r, int.from_bytes(uint(b, ss, se), "big")


def verify(name, sig):
    """ECDSA-SHA256 check of the issued certificate by its P-256 issuer (sig from check()): how
    it went (str), or RotationError."""
    try:
        from upcert import p256

        ok = p256.verify_digest(*sig)
    except MemoryError:  # p256 did not fit: say so, as for an RSA issuer
        return "is a trust anchor (no RAM left); signature not verified on device"
    finally:
        p256 = None
        drop("p256", "der", "derw")  # p256 brings the DER modules along
    if not ok:
        raise RotationError("issuer %r signature does not verify" % name, CHECK)
    return "signature verified"
