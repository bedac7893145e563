# Provisioning by claim (AWS IoT developer guide, "Provisioning by claim"): a board that holds
# only its batch's claim certificate (`upcert provision --claim`: CLAIM_CERT, CLAIM_KEY and the
# config's "claim" object) makes its own P-256 key (in the ATECC608 with that store) and CSR at
# first boot, connects with the claim identity, gets its certificate (CreateCertificateFromCsr)
# and its thing (RegisterThing with the claim template), writes the pair through its store,
# connects once with it, and only then erases the claim. start.py loads this module while the
# claim is on the flash, before anything else connects, and drops it after.
#
# A power cut loses nothing: until the board's own identity has connected, the claim stays. The
# pair is stored before RegisterThing activates its certificate, so AWS never holds an ACTIVE
# certificate the board does not.
# - before the store holds the new pair: the next boot claims again (the certificate issued for
#   the lost key stays PENDING_ACTIVATION, and AWS deletes it when its ownership token expires).
# - after: the next boot proves the stored pair with one connection; a refused pair (never
#   activated) is claimed again, over the pair it replaces.
import os
from time import sleep_ms

from micropython import const

from upcert import drop
from upcert.errors import CHECK, REFUSED, ConfigError, ConnectError, StoreError, UpcertError

CLAIM_CERT = "/upcert.d/claim.der"
CLAIM_KEY = "/upcert.d/claim.key"
# AWS IoT accepts one CONNECT per second per client id: the claim's, this board's proof and the
# agent's own connection use the same one.
_PACE_MS = const(1100)
_WORK = ("fleet", "csr", "p256", "derw", "certlean", "sigalgs", "der", "mqtt",
         "store_journal")


def pending():
    """True while the claim certificate is on the flash (the claim not proven done)."""
    try:
        os.stat(CLAIM_CERT)
        return True
    except OSError:
        return False


def settings(config):
    """config["claim"] checked, with defaults: {"template": AWS template name, "parameters":
    {str: str}} (config.py leaves it to this module: on a board without a claim its names
    would cost interned strings for good). ConfigError naming the problem."""
    c = config["claim"]
    t = c.get("template", "upcert-claim") if type(c) is dict else None
    p = c.get("parameters", {}) if type(c) is dict else None
    # AWS provisioning template names: [0-9A-Za-z_-], 1..36 characters
    if (type(t) is not str or not 0 < len(t) <= 36
            or [ch for ch in t if not (ch.isalpha() or ch.isdigit() or ch in "_-")]
            or type(p) is not dict or [k for k in p if type(p[k]) is not str]
            or [k for k in c if k not in ("template", "parameters")]):
        raise ConfigError("config 'claim' must be {\"template\": a template name ([0-9A-Za-z_-"
                          "], 1..36), \"parameters\": {name: string}}, got %r" % (c,))
    return {"template": t, "parameters": p}


def run(config, store, clock, make, roots, log):
    """Claim the board's own identity, or prove the one a cut claim left; then erase the
    claim. make(cert, key, roots) -> connect(host, port) for the board's own identity
    (app.connector). Raises ConnectError (the caller retries with backoff) for a network failure,
    an AWS rejection or a refused certificate; StoreError/ConfigError when a person must act."""
    if not pending():
        return
    cl = settings(config)
    try:
        have = store.certificate()
    except StoreError:
        have = None  # nothing stored yet, or a torn first write the store refuses
    try:
        if have:
            try:
                _prove(config, make, store.certificate(), store.private_key(), roots, log)
                _erase(log)
                return
            except UpcertError as e:  # ConnectError, TlsError (upcert's client), MqttError
                if e.reason != REFUSED:
                    raise
                log("upcert: claim: the stored identity was refused (%s): claiming again" % e)
        _claim(config, cl, store, clock, make, roots, log)
    except (StoreError, ConfigError):
        raise  # a person must act: the store cannot hold the pair, or a setting is wrong
    except UpcertError as e:  # network, TLS, MQTT, an AWS rejection, a failed check: retry
        raise ConnectError("claim: %s" % e, e.reason) from None
    finally:
        drop(*_WORK)


def _client(config):
    from upcert.mqtt import Client

    return Client(config["client_id"], config["keepalive_s"], limit=config["max_message_bytes"])


def _prove(config, make, cert, key, roots, log):
    # One MQTT connection with the board's own pair: CONNACK 0 means active, attached, allowed.
    c = _client(config)
    sleep_ms(_PACE_MS)
    c.connect(make(cert, key, roots)(config["endpoint"], config["port"]))
    c.disconnect()
    sleep_ms(_PACE_MS)
    log("upcert: claim: connected as %s with the board's own certificate" % config["client_id"])


def _claim(config, cl, store, clock, make, roots, log):
    from upcert import csr, tlsconn
    from upcert.store import read

    t = config["thing"]
    new_key = getattr(store, "new_key", None)
    if new_key:  # a secure element: the key made in a free key slot, never leaves it
        key, ref = new_key()
    else:
        from upcert import p256

        key = p256.generate()
        ref = None
    point = key.public_point()
    pem = csr.pem(csr.build(key, [("CN", t)] + list(config["fleet"]["subject"])))
    key = ref or key.private_der()
    csr = p256 = new_key = None
    drop("csr", "p256", "derw", "der")
    log("upcert: claim: new P-256 key, CSR for CN=%s" % t)
    cc, ck = read(CLAIM_CERT, "claim certificate"), read(CLAIM_KEY, "claim key")
    if config["tls"] == "upcert" or config["alpn"]:
        from upcert.tls12 import connector

        connect = connector(config, store, clock, cc, ck, roots, False)
    else:
        connect = tlsconn.Connector(tlsconn.make_context(cc, ck, roots)).connect
    cc = ck = None
    c = _client(config)
    log("upcert: claim: connecting %s:%s with the claim certificate as %s"
        % (config["endpoint"], config["port"], config["client_id"]))
    c.connect(connect(config["endpoint"], config["port"]))
    connect = None
    try:
        from upcert import fleet

        ms = config["fleet"]["timeout_s"] * 1000
        cid, cpem, token = fleet.create_from_csr(c, pem, ms)
        pem = None
        # Stored before RegisterThing activates it: a power cut from here on leaves a pair the
        # next boot proves (or, never activated, claims again over), never an ACTIVE
        # certificate the board does not hold.
        store.write(_checked(cpem, point, clock), key)
        cpem = key = None
        drop("store_journal", "certlean", "sigalgs")
        params = dict(cl["parameters"])
        params["ThingName"] = t
        got = fleet.register_thing(c, cl["template"], token, params, ms)["thingName"]
        if got != t:
            raise UpcertError("RegisterThing(%s) named the thing %r, the config says %r: make "
                              "the claim template use the ThingName parameter" % (cl["template"], got, t))
        log("upcert: claim: certificate %s issued and registered for %s" % (cid[:16], t))
    finally:
        c.disconnect()
    _prove(config, make, store.certificate(), store.private_key(), roots, log)
    _erase(log)


def _checked(pem, point, clock):
    # The issued certificate's DER after the checks a device can make on its own: our key, a
    # signature algorithm AWS accepts, valid now. (Its issuer is AWS's CA or the account's own,
    # not one of the server's roots: there is no earlier identity to compare it with.)
    from upcert.certlean import load
    from upcert.sigalgs import SIG_ALGS

    new = load(pem)
    why = None
    if new.public_key != point:
        why = "is not for our new key"
    elif new.sig_oid not in SIG_ALGS:
        why = "is signed %s: AWS IoT refuses it" % new.sig_oid
    elif new.validity(clock.require_trusted()) != "valid":
        why = "is not valid now"
    if why:
        raise UpcertError("issued certificate " + why, CHECK)
    return new.der


def _erase(log):
    # The claim's job is done: it is never used again (its key is shared by the batch).
    for p in (CLAIM_KEY, CLAIM_CERT):  # the certificate last: it is what pending() looks for
        try:
            os.remove(p)
        except OSError:
            pass
    log("upcert: claim: done; claim certificate and key erased")
