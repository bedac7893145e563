# One certificate rotation, step by step (scheduled by rotation.py, in RAM only meanwhile):
# CreateCertificateFromCsr, checks (issued.py reads, vet.py checks: each loaded for that only),
# stage in the idle slot, RegisterThing (when a template is set), trial connection (the agent's
# link closed first: one TLS connection at a time; the same client id, so the AWS policy needs
# no other), commit; the trial connection stays as the agent's link. Steps log "upcert:
# rotation: ...". Unlike the Jobs exchange these steps block the agent's loop (each AWS request
# up to fleet.timeout_s): a rotation is rare, and until it is over the device has nothing better
# to do; telemetry resumes right after.
import gc
from binascii import a2b_base64

from upcert import drop


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

        cid, cpem, token = fleet.create_from_csr(client, k, rot.ms)  # sets k[0] None once sent
        fleet = None
        drop("fleet")
        cpem = _der(cpem)
        say("certificate %s issued" % cid[:16])
        # Checks before RegisterThing: a certificate we refuse stays PENDING_ACTIVATION, never
        # active, and AWS deletes it when the ownership token expires.
        step = "check"
        from upcert import issued  # the reader's part of the checks, then the checks' own

        ident, new, facts, anchors = issued.read(cpem, k[3])
        cpem = issued = None
        drop("issued", "certlean")
        from upcert import vet

        name, how, sig = vet.check(facts, k[2], cert, rot.clock.require_trusted(), anchors)
        facts = anchors = None
        if sig:  # p256 comes in: the heap holds it or the certificate reader, not both
            how = vet.verify(name, sig)
        vet = None
        drop("vet")
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


def _der(pem):
    # The issued certificate as DER at once (a2b_base64 skips the line breaks, straight from the
    # text): the steps that follow hold its 560 bytes, not 800 of text, and the check's peak has
    # neither the text nor a bytes copy of it beside the certificate reader. Anything else is
    # passed on as it came, for the check's reader (certlean.load) to refuse.
    i = pem.find("-----BEGIN CERTIFICATE-----")
    j = pem.find("-----END", i + 1)
    if i < 0 or j < 0:
        return pem
    try:
        return a2b_base64(memoryview(pem)[i + 27 : j])
    except ValueError:
        return pem


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
