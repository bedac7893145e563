"""What each `upcert` command does, given its parsed arguments: the glue between the
subsystems (pki, board, emu, cloud) that the CLI calls. Output goes to stdout; progress and
warnings to stderr; errors are raised as UpcertError for the CLI to print in one line."""

import json
import os
import sys
from pathlib import Path

from upcert.errors import UpcertError


def home():
    return Path(os.environ.get("UPCERT_HOME", ".state"))


def _out(obj):
    print(json.dumps(obj, indent=2, default=str))


# ---- ca ----------------------------------------------------------------------------------
def do_ca_init(args):
    from upcert.pki.ca import LocalCa

    ca = LocalCa.init(args.dir, key_type=args.key_type, server_names=tuple(args.server_name),
                      force=args.force)
    print(f"local CA ({args.key_type}) in {ca.directory}: ca.pem, server.pem, admin.pem")


# ---- cert --------------------------------------------------------------------------------
def do_cert_inspect(args):
    from upcert.pki.inspect import inspect_file

    _out(inspect_file(args.file, device=args.device))


# ---- cloud -------------------------------------------------------------------------------
def _cloud(args):
    from upcert.cloud.standin import Cloud
    from upcert.pki.ca import LocalCa

    return Cloud, LocalCa.load(args.ca_dir)


def do_cloud_up(args):
    Cloud, ca = _cloud(args)
    cloud = Cloud(args.dir, ca, port=args.port, fault=args.fault, alpn=not args.no_alpn,
                  alpn_port=args.alpn_port)
    if (Path(args.dir) / "cloud.json").exists():
        running = Cloud.load(args.dir, ca)
        if running.is_running():
            if running.fault != cloud.fault:
                raise UpcertError(f"the cloud in {args.dir} already runs with fault "
                                  f"{running.fault or 'none'}: `upcert cloud down` first")
            cloud = running
    cloud.up()
    print(f"cloud up: mqtts://{cloud.endpoint}:{cloud.port} (mosquitto, TLS 1.2, client certs)")
    if cloud.alpn:
        print(f"          {cloud.endpoint}:{cloud.alpn_port}: the same broker as AWS serves "
              "port 443, for clients that offer ALPN x-amzn-mqtt-ca (haproxy)")
    if cloud.fault:
        from upcert.cloud.faults import FAULTS

        print(f"FAULT {cloud.fault}: the provisioning service will {FAULTS[cloud.fault]}",
              file=sys.stderr)


def do_cloud_down(args):
    Cloud, ca = _cloud(args)
    try:
        cloud = Cloud.load(args.dir, ca)
    except UpcertError:
        print("cloud: not running")
        return
    cloud.down()
    print("cloud down")


def do_cloud_status(args):
    Cloud, ca = _cloud(args)
    try:
        cloud = Cloud.load(args.dir, ca)
    except UpcertError:
        print("cloud: not running")
        return 1
    print(f"cloud: {cloud.status_text()}" + (f" (fault {cloud.fault})" if cloud.fault else ""))
    return 0 if cloud.is_running() else 1


# ---- board -------------------------------------------------------------------------------
def _state_dir(args, create=False):
    # --flash and --state name a folder of the user's choice; --name one under
    # $UPCERT_HOME/boards, checked (a folder name) and kept inside it
    from upcert.validate import board_state_dir

    if getattr(args, "flash", None):
        return Path(args.flash).parent
    return Path(args.state) if args.state else board_state_dir(home(), args.name, create)


def _use_table(args):
    # --partitions CSV: from now on the board's partition table (board.json), as flashing one
    if getattr(args, "partitions", None):
        from upcert.emu.config import use_table

        use_table(_state_dir(args, create=True), args.partitions)


def do_board_run(args):
    from upcert.emu import board as emulator

    _use_table(args)
    argv = ["run", "--state", str(_state_dir(args, create=True))]
    for opt in ("heapsize", "clock", "ntp", "atecc608"):
        if getattr(args, opt):
            argv += [f"--{opt}", getattr(args, opt)]
    return emulator.main(argv)


def do_board_start(args):
    from upcert.emu.board import EmulatedBoard

    _use_table(args)
    board = EmulatedBoard(_state_dir(args, create=True), heapsize=args.heapsize,
                          clock=args.clock, ntp=args.ntp, atecc608=args.atecc608)
    port = board.start()
    print(port)


def do_board_stop(args):
    from upcert.emu.board import stop_board

    if stop_board(_state_dir(args)):
        print("board stopped")
    else:
        print("board was not running")


def do_board_status(args):
    from upcert.board.provision import status

    _out(status(args.port))


# ---- certs / rotate (the stand-in's registry) ---------------------------------------------
def do_certs_list(args):
    if args.aws:
        return do_certs_list_aws(args)
    from upcert.cloud.admin import list_certificates

    rows = list_certificates(args.dir)
    if args.json:
        _out(rows)
        return
    import datetime as dt

    for r in rows:
        expires = r.get("not_after")
        if isinstance(expires, (int, float)):
            expires = dt.datetime.fromtimestamp(expires, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{r['cert_id'][:16]}  {r['status']:<18} {str(r.get('thing') or '-'):<24} "
              f"expires {expires}")
    print(f"{len(rows)} certificate(s)")


def _set_status(status):
    def handler(args):
        if args.aws:
            return do_certs_status_aws(args, status)
        from upcert.cloud.admin import set_certificate_status

        rec = set_certificate_status(args.dir, args.cert_id, status)
        print(f"{rec['cert_id']} is {rec['status']}: the broker now refuses it"
              if status != "ACTIVE" else f"{rec['cert_id']} is ACTIVE")
    return handler


def do_rotate(args):
    if args.aws:
        return do_rotate_aws(args)
    from upcert.cloud.admin import create_rotation_job

    job = create_rotation_job(args.dir, args.thing)
    print(f"job {job} queued for {args.thing}: the agent rotates when it receives it")


# ---- soak --------------------------------------------------------------------------------
def do_soak(args):
    from upcert import validate as v
    from upcert.soak import report
    from upcert.soak.run import Soak, parse_kinds

    boards = v.whole_number(args.boards, "--boards", 1, 32, "")
    minutes = v.number(args.minutes, "--minutes", 0.5, 1440)
    rate = v.number(args.rate, "--rate", 0.1, 120) if args.rate is not None else None
    seed = v.whole_number(args.seed, "--seed", 0, 2**31, "") if args.seed is not None else None
    soak = Soak(args.out or home() / "soak" / "run", boards=boards, minutes=minutes,
                kinds=parse_kinds(args.faults), rate=rate, seed=seed,
                log=lambda m: print(m, file=sys.stderr))
    if args.out is None:
        soak.out = (home() / "soak" / str(soak.seed)).resolve()
    rep = soak.run()
    print(report.table(rep), end="")
    print(f"report: {soak.out / 'report.json'}, {soak.out / 'report.txt'}"
          + (f", {rep['timeline']}" if rep.get("timeline") else
             " (no timeline.png: matplotlib is missing, `make setup` installs it)"))
    if not rep["ok"]:
        raise UpcertError("soak: the verdict is FAILED (see the report): messages lost, an "
                          "orphaned certificate, or a board that needs a person")


# ---- provision ---------------------------------------------------------------------------
def _checked(args, local_ca):
    from upcert.board.provision import check_options

    return check_options(args, local_ca)

def do_provision(args):
    from upcert.board import provision as p
    from upcert.cloud.admin import registry_state

    if args.claim:
        return do_provision_claim(args)
    if args.claim_cert or args.claim_key:
        raise UpcertError("--claim-cert and --claim-key go with --claim")
    if args.aws:
        return do_provision_aws(args)
    if args.endpoint is None:
        raise UpcertError("--endpoint HOST[:PORT] is needed (or --aws: the endpoint `upcert aws "
                          "setup` found)")
    args.ca_dir = args.ca_dir or str(home() / "ca")
    if args.store == "atecc608":
        return do_provision_chip(args)
    if args.lock:
        raise UpcertError("--lock locks an ATECC608's zones: it goes with --store atecc608")
    files = bool(args.cert or args.key or args.root_ca)
    wifi, extra, days = _checked(args, local_ca=not files)
    cfg = p.make_config(args.thing, args.endpoint, args.store, extra, wifi)
    if files:
        cert, key, roots = p.file_credentials(args.cert, args.key, args.root_ca)
    else:
        cert, key, roots = p.local_credentials(args.ca_dir, args.thing, days=days)
    # Like AWS, the local stand-in keeps a registry: a certificate it already holds for another
    # thing, or not ACTIVE, is refused now, before the board is written.
    known = registry_state(args.cloud_dir, cert, cfg["thing"])
    # Registered before the board is told to use it; retired again if the board never took it.
    reg = _registry(args)
    res = p.provision(args.port, cfg, cert, key, roots, board=args.board,
                      install=not args.no_firmware, reset=not args.no_reset,
                      log=lambda m: print(m, file=sys.stderr), registry=reg)
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if known == "active":
        print(f"already in the local stand-in's registry ({args.cloud_dir}) as ACTIVE for "
              f"{cfg['thing']}")
    else:
        _registered(args, reg)
    print(f"provisioned {res.thing} ({res.store} store) in {res.seconds:.1f} s")
    print(f"certificate id {res.cert_id}")
    print(f"expires {res.not_after.isoformat()}; issuer: {res.issuer_check}")


def do_provision_claim(args):
    from upcert import validate as v
    from upcert.board import provision as p
    from upcert.cloud.standin import Cloud
    from upcert.pki import certs

    if args.cert or args.key:
        raise UpcertError("--claim writes a claim, not an identity: leave out --cert and --key")
    if args.lock and args.store != "atecc608":
        raise UpcertError("--lock locks an ATECC608's zones: it goes with --store atecc608")
    if args.aws:  # the claim, endpoint and roots `upcert aws setup` wrote
        if args.endpoint or args.claim_cert or args.claim_key or args.root_ca:
            raise UpcertError("--claim --aws takes the endpoint, claim and roots that `upcert "
                              "aws setup` wrote: leave out --endpoint, --claim-* and --root-ca")
        from upcert.aws.fleet import load_settings
        from upcert.provision_aws import device_config

        settings = load_settings(home(), _aws(args).region)
        args.endpoint = settings["endpoint"]
        wifi, extra, _ = _checked(args, local_ca=False)
        extra["claim"] = {"template": settings["claim_template"]}
        cfg = device_config(settings, args.thing, args.store, extra, wifi, chip=_chip_store(args))
        cert_path, key_path = settings["claim"]["cert"], settings["claim"]["key"]
        roots = certs.load_certificates(settings["roots"])
        return _provision_claim(args, p, cfg, cert_path, key_path, roots)
    if args.endpoint is None:
        raise UpcertError("--endpoint HOST[:PORT] is needed (or --aws: the endpoint `upcert aws "
                          "setup` found)")
    wifi, extra, _ = _checked(args, local_ca=True)
    v.template_name(args.claim_template)
    extra["claim"] = {"template": args.claim_template}
    if args.store == "atecc608":
        from upcert.board import chip

        cfg = chip.make_chip_config(args.thing, args.endpoint, extra=extra, wifi=wifi,
                                    **_chip_store(args))
    else:
        cfg = p.make_config(args.thing, args.endpoint, args.store, extra, wifi)
    if args.claim_cert or args.claim_key:
        if not (args.claim_cert and args.claim_key and args.root_ca):
            raise UpcertError("--claim-cert, --claim-key and --root-ca go together")
        cert_path, key_path = args.claim_cert, args.claim_key
        roots = certs.load_certificates(args.root_ca)
    else:
        cloud = Cloud.from_state(args.cloud_dir)  # CloudError naming `upcert cloud up`
        cert_path, key_path = cloud.claim_credentials()
        roots = certs.load_certificates(args.root_ca) if args.root_ca else [cloud.ca.certificate]
    return _provision_claim(args, p, cfg, cert_path, key_path, roots)


def _chip_store(args):
    return {"address": args.chip_address, "slot": args.slot, "cert": args.chip_cert}


def _provision_claim(args, p, cfg, cert_path, key_path, roots):
    from upcert.pki import certs

    cert, key = certs.load_certificate(cert_path), certs.load_private_key(key_path)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    prepare = None
    if args.store == "atecc608":
        from upcert.board import chip

        prepare = chip.claim_preparer(cfg["store"], args.lock, log)
    res = p.provision_claim(args.port, cfg, cert, key, roots, board=args.board,
                            install=not args.no_firmware, reset=not args.no_reset, log=log,
                            prepare=prepare)
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"claim written for {res.thing} ({res.store} store) in {res.seconds:.1f} s: claim "
          f"certificate {res.cert_id[:16]}, template {args.claim_template}")
    print("at its first boot the board makes its key, gets its certificate and erases the claim")


def _registry(args):
    # The local stand-in's registry when a local cloud lives in --cloud-dir, else None.
    if not (Path(args.cloud_dir) / "cloud.json").exists():
        return None
    from upcert.cloud.registry import Registry
    from upcert.cloud.standin import Cloud

    return Registry(Cloud.from_state(args.cloud_dir).registry_path)


def _registered(args, reg):
    # Like AWS, the local stand-in keeps a registry (`upcert certs list|deactivate|revoke`).
    if reg is not None:
        print(f"registered in the local stand-in's registry ({args.cloud_dir}) as ACTIVE")


def do_provision_chip(args):
    from upcert.board import chip as pc

    if args.cert or args.key or args.root_ca:
        raise UpcertError("--store atecc608 makes the key inside the chip: --cert, --key and "
                          "--root-ca do not apply (the local CA in --ca-dir signs the CSR)")
    wifi, extra, days = _checked(args, local_ca=True)  # the local CA signs the chip's CSR
    cfg = pc.make_chip_config(args.thing, args.endpoint, address=args.chip_address,
                              slot=args.slot, cert=args.chip_cert, extra=extra, wifi=wifi)
    reg = _registry(args)  # registered before the board is told to use it (provision_chip)
    res = pc.provision_chip(args.port, cfg, args.ca_dir, lock=args.lock, board=args.board,
                            install=not args.no_firmware, reset=not args.no_reset,
                            days=days, log=lambda m: print(m, file=sys.stderr), registry=reg)
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    _registered(args, reg)
    print(f"provisioned {res.thing} (atecc608 store, chip {res.serial}, key slot {res.slot}) "
          f"in {res.seconds:.1f} s")
    print(f"certificate id {res.cert_id}")
    print(f"expires {res.not_after.isoformat()}; issuer: {res.issuer_check}")


def do_chip_rotate(args):
    from upcert.board.chip import rotate_chip
    from upcert.validate import days

    reg = _registry(args)  # registered before it is staged (rotate_chip)
    res = rotate_chip(args.port, args.ca_dir, days=days(args.days),
                      log=lambda m: print(m, file=sys.stderr), registry=reg)
    _registered(args, reg)
    print(f"rotated {res.thing}: key slot {res.old_slot} -> {res.new_slot}, certificate id "
          f"{res.cert_id} committed")


# ---- AWS IoT Core (upcert.aws; provisioning a board there: upcert.provision_aws) -------------
def _aws(args):
    from upcert.aws.client import Aws

    return Aws(region=args.region, profile=args.profile)


def _aws_command(fn):
    # Any AWS error a command meets, however deep, ends as one AwsError line (aws.client).
    import functools

    @functools.wraps(fn)
    def run(args, *more):
        from upcert.aws.client import errors

        with errors(getattr(args, "region", None), getattr(args, "profile", None)):
            return fn(args, *more)
    return run


@_aws_command
def do_aws_setup(args):
    from upcert.aws.fleet import setup

    if args.role_arn and args.create_role:
        raise UpcertError("--role-arn and --create-role contradict each other: give one")
    aws = _aws(args)
    rep = setup(aws, home(), role_arn=args.role_arn, create_role=args.create_role)
    changed = len(rep.changed)
    print(f"aws setup in {aws.region} (account {rep.settings['account']}): "
          + (f"{changed} resource(s) created or updated" if changed else "nothing to change"))
    print(f"endpoint {rep.settings['endpoint']}; settings in {home() / 'aws' / aws.region}")


@_aws_command
def do_aws_register_ca(args):
    from upcert.aws.ca import register_ca
    from upcert.pki.ca import LocalCa

    ca = LocalCa.load(args.ca_dir)
    aws = _aws(args)
    from upcert.pki.certs import generate_key

    def prove(code):  # the verification certificate: CN = the code, signed by the CA's key
        return ca.issue_device(code, generate_key("ec").public_key(), days=1)

    cid, outcome = register_ca(aws, ca.certificate, prove,
                               auto_registration=args.auto_registration)
    print(f"CA certificate {cid[:16]} ({ca.certificate.subject.rfc4514_string()}): {outcome}, "
          f"ACTIVE in {aws.region}"
          + ("; devices it signs register themselves at first connect"
             if args.auto_registration else ""))


@_aws_command
def do_provision_aws(args):
    from upcert.provision_aws import device_config, parse_attributes, provision_aws

    if args.endpoint is not None:
        raise UpcertError("--aws connects the board to the endpoint `upcert aws setup` found: "
                          "leave out --endpoint")
    if args.cert or args.key or args.root_ca:
        raise UpcertError("--aws gets the certificate from AWS for a key made on the board: "
                          "--cert, --key and --root-ca do not apply")
    wifi, extra, days = _checked(args, local_ca=bool(args.ca_dir))
    attrs = parse_attributes(args.attr)
    aws = _aws(args)
    from upcert.aws.fleet import load_settings

    settings = load_settings(home(), aws.region)
    chip = {"address": args.chip_address, "slot": args.slot, "cert": args.chip_cert}
    cfg = device_config(settings, args.thing, args.store, extra, wifi, chip=chip)
    res = provision_aws(aws, home(), args.port, cfg, thing_type=args.thing_type,
                        group=args.thing_group, attributes=attrs,
                        key_travels=args.aws_insecure_key_travels, ca_dir=args.ca_dir, days=days,
                        lock=args.lock, board=args.board, install=not args.no_firmware,
                        reset=not args.no_reset, log=lambda m: print(m, file=sys.stderr))
    print(f"provisioned {res.thing} ({res.store} store) on AWS IoT in {aws.region} in "
          f"{res.seconds:.1f} s")
    print(f"certificate id {res.cert_id}")
    print(f"expires {res.not_after.isoformat()}; issuer: {res.issuer}")
    print(f"endpoint {res.endpoint}:8883; rotation template {res.template}")


@_aws_command
def do_certs_list_aws(args):
    from upcert.aws.registry import list_certificates

    rows = list_certificates(_aws(args))
    if args.json:
        _out(rows)
        return
    for r in rows:
        print(f"{r['cert_id'][:16]}  {r['status']:<18} {str(r.get('thing') or '-'):<24} "
              f"expires {r['not_after']}")
    print(f"{len(rows)} certificate(s)")


@_aws_command
def do_certs_status_aws(args, status):
    from upcert.aws.registry import set_status

    aws = _aws(args)
    cid = set_status(aws, args.cert_id, status)
    print(f"{cid} is {status} in {aws.region}" + (
        ": AWS IoT refuses it at connect and disconnects a device using it"
        if status != "ACTIVE" else ""))


@_aws_command
def do_rotate_aws(args):
    from upcert.aws.registry import create_rotation_job

    aws = _aws(args)
    job = create_rotation_job(aws, args.thing)
    print(f"job {job} created in {aws.region} for {args.thing}: the agent rotates when it "
          "receives it")
