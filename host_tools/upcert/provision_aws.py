"""`upcert provision --aws`: a board's identity on AWS IoT Core, with what `upcert aws setup` left
in $UPCERT_HOME/aws/<region>/aws.json. It needs a board and AWS, so it sits above both (`board`
and `aws` never import each other), and below `factory` (`upcert batch --aws` uses it).

The key is made on the board (store fs, nvs, partition: upcert.p256 on the board; atecc608: in
the chip), the CSR goes to CreateCertificateFromCsr (or, with a local CA registered by `upcert
aws register-ca`, to that CA, and its certificate to RegisterCertificate), and the answer is
refused unless it carries the board's public key. The certificate is created INACTIVE; the thing
is created, policy and principal attached; the board stores the pair; only then is the
certificate made ACTIVE and the board rebooted. Whatever fails before that retires the
certificate (INACTIVE, detached, deleted). key_travels=True uses CreateKeysAndCertificate
instead: AWS makes the key and it crosses the network.
"""

from dataclasses import dataclass, field

from upcert.aws import fleet, identity
from upcert.errors import UpcertError
from upcert.pki import certs


@dataclass
class AwsResult:
    thing: str
    store: str
    cert_id: str
    not_after: object
    issuer: str
    endpoint: str
    template: str
    done: list = field(default_factory=list)  # what was done in the account, as text
    seconds: float = 0.0


def parse_attributes(pairs):
    """['k=v', ...] -> {k: v}, checked against AWS's attribute rules ([a-zA-Z0-9_.,@/:#-])."""
    import re

    out = {}
    for pair in pairs or ():
        k, sep, v = pair.partition("=")
        if not sep or not re.fullmatch(r"[a-zA-Z0-9_.,@/:#-]{1,128}", k) \
                or not re.fullmatch(r"[a-zA-Z0-9_.,@/:#=\[\]-]{0,800}", v):
            raise UpcertError(f"--attr {pair!r}: give NAME=VALUE, name 1..128 and value 0..800 "
                              "characters of [a-zA-Z0-9_.,@/:#-] (AWS IoT thing attributes)")
        out[k] = v
    return out


def device_config(settings, thing, store, extra=None, wifi=None, chip=None):
    """config.json for a board on the account's endpoint (port 8883), rotating with the
    rotation template. chip: {'address', 'slot', 'cert'} for store atecc608."""
    from upcert.board import chip as pc
    from upcert.board import provision as p

    endpoint = f"{settings['endpoint']}:{settings.get('port', 8883)}"
    if store == "atecc608":
        cfg = pc.make_chip_config(thing, endpoint, extra=extra, wifi=wifi, **(chip or {}))
    else:
        cfg = p.make_config(thing, endpoint, store, extra, wifi)
    cfg["fleet"] = {"template": settings["rotation_template"]}
    return cfg


def provision_aws(aws, home, port, cfg, *, thing_type=None, group=None, attributes=None,
                  key_travels=False, ca_dir=None, days=365, lock=False, board="esp32_generic",
                  install=True, reset=True, log=print, on_issued=None):
    """Provision the board on `port` with config cfg (device_config) on AWS; an AwsResult.
    on_issued(identity.Issued), if given, runs once AWS holds the certificate (INACTIVE) and
    before the board is told to store it (the batch records it in its inventory there); if it
    raises, the certificate is retired as for any failure before activation."""
    import time

    from upcert.board import provision as p

    started = time.monotonic()
    settings = fleet.load_settings(home, aws.region)
    roots = certs.load_certificates(settings["roots"])
    thing, store = cfg["thing"], cfg["store"]["kind"]
    if key_travels and (store == "atecc608" or ca_dir):
        raise UpcertError("--aws-insecure-key-travels makes the key at AWS: it cannot go with "
                          "--store atecc608 (the key is made in the chip) or --ca-dir")
    local = None
    if ca_dir:
        from upcert.pki.ca import LocalCa

        local = LocalCa.load(ca_dir)
    done = identity.ensure_thing(aws, thing, thing_type, group, attributes)
    for line in done:
        log(line)
    issued, activated = [], []

    def issue(csr, thing=thing):
        if local is not None:
            cert = local.issue_device(thing, csr.public_key(), days=days)
            iss = identity.register_certificate(aws, cert, local.certificate)
            how = f"local CA {local.certificate.subject.rfc4514_string()}, registered with AWS IoT"
        else:
            iss = identity.certificate_from_csr(aws, csr)
            how = "AWS IoT (CreateCertificateFromCsr); public key checked: the board's"
        issued.append(iss)
        identity.attach(aws, iss, thing, settings["device_policy"])
        log(f"certificate {iss.certificate_id[:16]} for {thing}: {how}")
        if on_issued is not None:
            on_issued(iss)
        return iss.certificate, how

    def stored(_cert):
        identity.activate(aws, issued[-1].certificate_id)
        activated.append(True)
        log(f"certificate {issued[-1].certificate_id[:16]} ACTIVE (the board holds it)")

    quiet = {"log": log, "board": board, "install": install, "reset": reset}
    try:
        if key_travels:
            iss = identity.keys_and_certificate(aws)
            issued.append(iss)
            identity.attach(aws, iss, thing, settings["device_policy"])
            if on_issued is not None:
                on_issued(iss)
            log(f"certificate {iss.certificate_id[:16]} and its key made by AWS "
                "(CreateKeysAndCertificate): the key travelled to this host and the board")
            res = p.provision(port, cfg, iss.certificate, iss.private_key, roots,
                              **{**quiet, "reset": False})
            stored(iss.certificate)
            if reset:
                from upcert.board.transport import Board

                with Board(port, operation="provision") as b:
                    b.hard_reset()
            how = "AWS IoT (CreateKeysAndCertificate)"
        elif store == "atecc608":
            from upcert.board import chip as pc

            res = pc.provision_chip(port, cfg, lock=lock, roots=roots,
                                    issue=lambda t, csr: issue(csr, t), stored=stored, **quiet)
            how = res.issuer_check
        else:
            res = p.provision_csr(port, cfg, roots, issue, stored=stored, **quiet)
            how = res.issuer_check
    except BaseException as exc:
        if issued and not activated:
            try:
                identity.retire(aws, issued[-1].certificate_id)
                note = (f"certificate {issued[-1].certificate_id[:16]} was set INACTIVE and "
                        "deleted in AWS IoT")
            except UpcertError as e:
                note = f"certificate {issued[-1].certificate_id[:16]} could not be retired ({e})"
            if isinstance(exc, UpcertError) and exc.args and "deleted" not in str(exc.args[0]):
                exc.args = (f"{exc.args[0]}; {note}",) + exc.args[1:]
        raise
    cert = issued[-1].certificate
    return AwsResult(thing, store, issued[-1].certificate_id, cert.not_valid_after_utc, how,
                     settings["endpoint"], settings["rotation_template"], done,
                     time.monotonic() - started)
