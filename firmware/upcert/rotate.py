# One certificate rotation, step by step (scheduled by rotation.py, in RAM only meanwhile): new
# P-256 key, CSR, CreateCertificateFromCsr (+ RegisterThing), checks, stage in the idle slot,
# trial connection under another client id, commit, report. Steps log "upcert: rotation: ...".
import hashlib

from upcert import der, fleet, jobs
from upcert.clock import iso
from upcert.errors import MqttError, RotationError
from upcert.mqtt import Client
from upcert.rotation import drop
from upcert.x509 import Certificate, load


def run(rot, client, cert, k):
    """Steps 3-8 of a rotation for rot (upcert.rotation.Rotation) over the agent's connected
    client; cert: the x509.Certificate in use; k: (CSR PEM, new key DER, its public point).
    True once the new identity is committed; False after a failed step (logged, retry
    scheduled); MqttError/OSError when the agent's own link broke."""
    c = rot.config
    fl = c["fleet"]
    thing = c["thing"]
    say = rot.say
    step = "issue"
    staged = False
    try:
        cid, cpem, token = fleet.create_from_csr(client, k[0], rot.ms)
        say("certificate %s issued" % cid[:16])
        tpl = fl["template"]
        if tpl:
            step = "register"
            params = dict(fl["parameters"])
            params["ThingName"] = thing
            fleet.register_thing(client, tpl, token, params, rot.ms)
            say("RegisterThing(%s) accepted" % tpl)
        token = None
        step = "check"
        new = load(cpem)
        cpem = None
        roots = rot.roots() if rot.roots else ()
        ck = check(new, k[2], cert, rot.clock.require_trusted(), roots)
        roots = None
        say("checks passed: " + ck)
        step = "stage"
        rot.store.stage(new.der, k[1])
        staged = True
        k = None
        say("staged")
        step = "trial"
        say("trial connection as %s accepted" % _trial(rot))
        step = "commit"
        rot.store.commit()
        staged = False
    except Exception as e:
        rot._next = None
        try:
            if staged:
                rot.store.discard()  # a failure here reaches the agent's log after ours
        finally:
            rot.fail(client, step, e)
        if isinstance(e, (MqttError, OSError)) and step in ("issue", "register"):
            raise  # the agent's own link is gone: it reconnects
        return False
    nid = new.cert_id()
    say("committed certificate %s" % nid[:16])
    rot.state = "done"
    rot.want = None
    rot._backoff_s = rot._retry_at = rot.tries = 0
    jobs.report(
        rot, client, "SUCCEEDED", {"oldCertificateId": cert.cert_id(), "newCertificateId": nid}
    )
    say("done: certificate %s expires %s; reconnecting" % (nid[:16], iso(new.not_after)))
    return True


def _trial(rot):
    # A second connection with the staged pair under another client id: AWS would drop our
    # first connection for a duplicate id (DESIGN.md §3). CONNACK 0 = active and allowed.
    c = rot.config
    pair = rot.store.staged()  # read back from the store: what the next boot would use
    rot._next = connect = rot.connector(pair[0], pair[1])
    pair = None
    cid = c["client_id"].encode()[:124] + b"-rot"  # AWS IoT: client id <= 128 bytes
    m = Client(cid, c["keepalive_s"])
    try:
        m.connect(connect(c["endpoint"], c["port"]))
    finally:
        m.disconnect()
    return cid.decode()


def check(new, point, old, now, roots):
    """How the issuer was checked (str), or RotationError naming the first problem.

    new, old: x509.Certificate (issued, current); point: our new public key (65 bytes
    04||X||Y); now: trusted time (port epoch); roots: trust anchors (DER certificates).
    """
    why = None
    if new.public_key != point:
        why = "is not for our new key"
    elif not new.sig_alg_aws_ok:
        why = "signed %s: AWS IoT refuses it" % new.sig_alg
    elif new.validity(now) != "valid":
        why = "valid %s..%s, not now (%s)" % (iso(new.not_before), iso(new.not_after), iso(now))
    # >=, not >: certificates AWS issues from a CSR all expire 2049-12-31 (DESIGN.md §3).
    elif new.not_after < old.not_after:
        why = "expires %s, before the current one (%s)" % (iso(new.not_after), iso(old.not_after))
    if why:
        raise RotationError("issued certificate " + why)
    # The issuer among the trust anchors (by CN): a P-256 one lets us verify the signature
    # (ECDSA-SHA256 only: MicroPython's hashlib has no SHA-384). Otherwise the issuer must be a
    # trust anchor or the current certificate's issuer, and its signature is not checked here
    # (RSA issuers such as AWS's own CA, or issuers whose certificate is not on the device).
    name = new.issuer_cn
    how = "as before"
    for d in roots:
        ca = Certificate(d)
        if ca.subject_cn == name:
            if ca.key_bits == 256 and ca.key_type == "EC" and new.sig_alg == "ECDSA-WITH-SHA256":
                try:
                    ok = _verify(new, ca.public_key)
                except MemoryError:  # p256 did not fit: say so, as for an RSA issuer
                    how = "is a trust anchor (no RAM left)"
                    break
                finally:
                    drop(("p256",))
                if not ok:
                    raise RotationError("issuer %r signature does not verify" % name)
                return "issuer %r signature verified" % name
            how = "is a trust anchor (%s)" % ca.key_type
            break
    else:
        if name != old.issuer_cn:
            raise RotationError(
                "issuer %r is neither %r nor a trust anchor" % (name, old.issuer_cn)
            )
    return "issuer %r %s; signature not verified on device" % (name, how)


def _verify(cert, point):
    # ECDSA-SHA256 over the DER of tbsCertificate (RFC 5280 §4.1.1.3); Ecdsa-Sig-Value r, s
    # (RFC 3279 §2.2.3).
    from upcert import p256

    buf, s, e = der.single(cert.der)
    digest = hashlib.sha256(buf[s : der.tlv(buf, s, e)[2]]).digest()
    b, s, e = der.single(cert.signature)
    rs, re_ = der.expect(b, s, e, der.INTEGER, "r")
    ss, se = der.expect(b, re_, e, der.INTEGER, "s")
    return p256.verify_digest(
        point,
        digest,
        int.from_bytes(der.read_uint_bytes(b, rs, re_), "big"),
        int.from_bytes(der.read_uint_bytes(b, ss, se), "big"),
    )
