# One certificate rotation, step by step (scheduled by rotation.py, in RAM only meanwhile):
# CreateCertificateFromCsr, checks, stage in the idle slot, RegisterThing (when a template is
# set), trial connection (the agent's link closed first: one TLS connection at a time; the same
# client id, so the AWS policy needs no other), commit; the trial connection stays as the agent's
# link. Steps log "upcert: rotation: ...". Unlike the Jobs exchange
# these steps block the agent's loop (each AWS request up to fleet.timeout_s): a rotation is rare,
# and until it is over the device has nothing better to do; telemetry resumes right after.
import gc
import hashlib

from upcert import drop
from upcert.clock import iso
from upcert.errors import CHECK, RotationError
from upcert.tlsconn import Ident


def run(rot, client, cert, k):
    """Steps 3-8 of a rotation for rot (upcert.rotation.Rotation, read only) over the agent's
    connected client; cert: the identity in use (cert_id(), not_after, issuer_cn); k: [CSR PEM,
    new key DER, its public point, the trust anchors (DER list)] (emptied as the steps use
    them). Returns (None, ident, connect) once the new identity is committed, client connected
    with it (ident: its tlsconn.Ident; connect: the trial's, for later reconnections), or (step,
    exception, id) after a failed step, the
    staged pair discarded (its key erased; from the trial on, client is closed), id: the
    certificate AWS issued for it, if any (to be retired: it must not stay usable). The caller
    (Rotation) owns every decision that follows."""
    c = rot.config
    fl = c["fleet"]
    say = rot.say
    step = "issue"
    staged = False
    connect = cid = None
    try:
        from upcert import fleet

        cid, cpem, token = fleet.create_from_csr(client, k[0], rot.ms)
        k[0] = fleet = None  # the CSR is sent: free it (the caller shares k)
        drop("fleet")
        say("certificate %s issued" % cid[:16])
        # Checks before RegisterThing: a certificate we refuse stays PENDING_ACTIVATION, never
        # active, and AWS deletes it when the ownership token expires.
        step = "check"
        ident, new, name, how, sig = _checked(cpem, k[2], cert, rot.clock, k[3])
        cpem = None
        drop("certlean", "sigalgs")  # before p256 comes in: the heap holds one of them at a time
        if sig:
            how = _verify(name, sig)
        say("checks passed: issuer %r %s" % (name, how))
        # Staged before RegisterThing activates it: from then on the flash names the
        # certificate, so a power cut at any later point leaves it where the next boot finds,
        # discards and reports it for retirement (rotation.start()), never ACTIVE and unknown.
        step = "stage"
        rot.store.stage(new, k[1])
        staged = True
        new = k[1] = None
        drop("store_journal")  # the journal's code, until the commit needs it again
        say("staged")
        tpl = fl["template"]
        if tpl:
            step = "register"
            from upcert import fleet

            params = dict(fl["parameters"])
            params["ThingName"] = c["thing"]
            fleet.register_thing(client, tpl, token, params, rot.ms)
            fleet = params = None
            drop("fleet")
            say("RegisterThing(%s) accepted" % tpl)
        token = None
        step = "trial"
        connect = _trial(rot, client, k)
        say("trial connection as %s accepted" % c["client_id"])
        step = "commit"
        rot.store.commit()
        staged = False
    except Exception as e:
        connect = k[0] = k[1] = None
        if step in ("trial", "commit"):
            client.close()
        if staged:
            _discard(rot.store)  # erases the key; a failure here reaches the agent's log
        return step, e, cid
    say("committed certificate %s" % ident.id[:16])
    return None, ident, connect


def _checked(pem, point, cert, clock, roots):
    # The issued certificate (PEM) read and checked in a frame of its own: (its Ident, DER) +
    # check()'s result. The Ident spares the agent the certificate reader after the commit, when
    # the heap is at its most fragmented. MicroPython's VM leaves popped values in a frame's stack slots, and
    # the GC scans them: had run() held the Cert, the certificate reader would stay in RAM
    # (via its class) however it is dropped.
    from upcert.certlean import load

    new = load(pem)
    return (Ident(new), new.der) + check(
        new, point, cert, clock.require_trusted(), roots
    )


def _discard(store):
    # After an out-of-memory step the heap may be too full even for this: collect, try again.
    try:
        store.discard()
    except MemoryError:
        gc.collect()
        store.discard()


def _trial(rot, client, k):
    # The agent's link closes (DISCONNECT), then client connects with the staged pair under the
    # same client id; CONNACK 0 = active, attached and allowed. Returns connect for reuse. The
    # trust anchors (k[3]) leave RAM once the new TLS context holds them, before the handshake.
    c = rot.config
    pair = rot.store.staged()  # read back from the store: what the next boot would use
    connect = rot.connector(pair[0], pair[1], k[3] or None)
    pair = k[3] = None
    client.disconnect()
    client.connect(connect(c["endpoint"], c["port"]))
    return connect


def check(new, point, old, now, roots):
    """(issuer CN, how it was checked, signature to verify or None), or RotationError naming the
    first problem. The signature (issuer's point, digest, r, s) is for _verify(), once the
    certificate reader has left RAM.

    new: certlean.Cert (issued); old: the identity in use (not_after, issuer_cn); point: our
    new public key (65 bytes 04||X||Y); now: trusted time (port epoch); roots: trust anchors
    (DER certificates).
    """
    from upcert.sigalgs import SIG_ALGS

    alg = SIG_ALGS.get(new.sig_oid)
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


def _verify(name, sig):
    # ECDSA-SHA256 check of the issued certificate by its P-256 issuer: how it went (str).
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
