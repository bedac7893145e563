# The checks of a certificate issued for a rotation (step 4, rotate.py; in RAM only meanwhile,
# on the facts issued.py read, the certificate reader gone): for our new key, a signature
# algorithm AWS IoT accepts, valid now and not expiring before the one in use, an issuer among
# the trust anchors (or the current one's), and when that issuer has a P-256 key its signature
# verified on the device.
from upcert import drop
from upcert.clock import iso
from upcert.errors import CHECK, RotationError


def check(facts, point, old, now, anchors):
    """(issuer CN, how it was checked, signature to verify or None), or RotationError naming the
    first problem. The signature (issuer's point, digest, r, s) is for verify().

    facts, anchors: issued.read()'s; old: the identity in use (not_after, issuer_cn); point:
    our new public key (65 bytes 04||X||Y); now: trusted time (port epoch).
    """
    key, oid, nb, na, name, aki, sig = facts
    from upcert.sigalgs import SIG_ALGS

    alg = SIG_ALGS.get(oid)
    SIG_ALGS = None
    drop("sigalgs")
    why = None
    if key != point:
        why = "is not for our new key"
    elif not alg:
        why = "signed %s: AWS IoT refuses it" % oid
    elif not nb <= now <= na:  # both bounds inclusive (RFC 5280 §4.1.2.5)
        why = "valid %s..%s, not now (%s)" % (iso(nb), iso(na), iso(now))
    # >=, not >: certificates AWS issues from a CSR all expire 2049-12-31 (AWS IoT API reference,
    # CreateCertificateFromCsr).
    elif na < old.not_after:
        why = "expires %s, before the current one (%s)" % (iso(na), iso(old.not_after))
    if why:
        raise RotationError("issued certificate " + why, CHECK)
    # The issuer among the trust anchors (by CN): a P-256 one lets us verify the signature
    # (ECDSA-SHA256 only: MicroPython's hashlib has no SHA-384). Otherwise the issuer must be a
    # trust anchor or the current certificate's issuer, and its signature is not checked here
    # (RSA issuers such as AWS's own CA, or issuers whose certificate is not on the device).
    how = "as before"
    for cn, ski, kt, bits, pub in anchors:
        if cn == name:
            # Same name, another key (an impostor CA): the issuer's key identifier says so
            # (RFC 5280 §4.2.1.1), for RSA issuers too, whose signature the device cannot check.
            if aki and ski and aki != ski:
                raise RotationError(
                    "issued certificate names issuer key %s, but trust anchor %r has key %s"
                    % (_hex(aki), name, _hex(ski)), CHECK)
            if bits == 256 and kt == "EC" and sig:
                return name, None, (pub,) + sig
            how = "is a trust anchor (%s)" % kt
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
        drop("p256")
    if not ok:
        raise RotationError("issuer %r signature does not verify" % name, CHECK)
    return "signature verified"
