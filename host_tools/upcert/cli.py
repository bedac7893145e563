"""The `upcert` command: parses arguments, calls the library, maps errors to one stderr line.

State lives under $UPCERT_HOME (default ./.state): ca/, cloud/, boards/<name>/.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import UpcertError


def home():
    return Path(os.environ.get("UPCERT_HOME", ".state"))


def _out(obj):
    print(json.dumps(obj, indent=2, default=str))


# ---- ca ----------------------------------------------------------------------------------
def do_ca_init(args):
    from .certs import LocalCa

    ca = LocalCa.init(args.dir, key_type=args.key_type, server_names=tuple(args.server_name),
                      force=args.force)
    print(f"local CA ({args.key_type}) in {ca.directory}: ca.pem, server.pem, admin.pem")


# ---- cert --------------------------------------------------------------------------------
def do_cert_inspect(args):
    from .inspect import inspect_file

    _out(inspect_file(args.file, device=args.device))


# ---- cloud -------------------------------------------------------------------------------
def _cloud(args):
    from .certs import LocalCa
    from .cloud import Cloud

    return Cloud, LocalCa.load(args.ca_dir)


def do_cloud_up(args):
    Cloud, ca = _cloud(args)
    cloud = Cloud(args.dir, ca, port=args.port, fault=args.fault)
    if (Path(args.dir) / "cloud.json").exists():
        running = Cloud.load(args.dir, ca)
        if running.is_running():
            if running.fault != cloud.fault:
                raise UpcertError(f"the cloud in {args.dir} already runs with fault "
                                  f"{running.fault or 'none'}: `upcert cloud down` first")
            cloud = running
    cloud.up()
    print(f"cloud up: mqtts://{cloud.endpoint}:{cloud.port} (mosquitto, TLS 1.2, client certs)")
    if cloud.fault:
        from .faults import FAULTS

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
    from .validate import board_state_dir

    if getattr(args, "flash", None):
        return Path(args.flash).parent
    return Path(args.state) if args.state else board_state_dir(home(), args.name, create)


def _use_table(args):
    # --partitions CSV: from now on the board's partition table (board.json), as flashing one
    if getattr(args, "partitions", None):
        from .emulator_config import use_table

        use_table(_state_dir(args, create=True), args.partitions)


def do_board_run(args):
    from . import emulator

    _use_table(args)
    argv = ["run", "--state", str(_state_dir(args, create=True))]
    for opt in ("heapsize", "clock", "ntp", "atecc608"):
        if getattr(args, opt):
            argv += [f"--{opt}", getattr(args, opt)]
    return emulator.main(argv)


def do_board_start(args):
    from .emulator import EmulatedBoard

    _use_table(args)
    board = EmulatedBoard(_state_dir(args, create=True), heapsize=args.heapsize,
                          clock=args.clock, ntp=args.ntp, atecc608=args.atecc608)
    port = board.start()
    print(port)


def do_board_stop(args):
    from .emulator import stop_board

    if stop_board(_state_dir(args)):
        print("board stopped")
    else:
        print("board was not running")


def do_board_status(args):
    from .provision import status

    _out(status(args.port))


# ---- certs / rotate (the stand-in's registry) ---------------------------------------------
def do_certs_list(args):
    from .provisioning import list_certificates

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
        from .provisioning import set_certificate_status

        rec = set_certificate_status(args.dir, args.cert_id, status)
        print(f"{rec['cert_id']} is {rec['status']}: the broker now refuses it"
              if status != "ACTIVE" else f"{rec['cert_id']} is ACTIVE")
    return handler


def do_rotate(args):
    from .provisioning import create_rotation_job

    job = create_rotation_job(args.dir, args.thing)
    print(f"job {job} queued for {args.thing}: the agent rotates when it receives it")


# ---- provision ---------------------------------------------------------------------------
def _checked(args, local_ca):
    """Every option of `provision` checked before anything is written: (wifi, extra, days)."""
    from . import validate as v

    v.thing_name(args.thing, local_ca=local_ca)
    v.endpoint(args.endpoint)
    interval = v.telemetry_interval(args.telemetry_interval)
    days = v.days(args.days)
    wifi = None
    if args.wifi_ssid is not None:
        wifi = v.wifi(args.wifi_ssid, os.environ.get("UPCERT_WIFI_PASSWORD", ""))
    return wifi, {} if interval is None else {"telemetry_interval_s": interval}, days


def do_provision(args):
    from . import provision as p
    from .validate import registry_state

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


def _registry(args):
    # The local stand-in's registry when a local cloud lives in --cloud-dir, else None.
    if not (Path(args.cloud_dir) / "cloud.json").exists():
        return None
    from .cloud import Cloud
    from .registry import Registry

    return Registry(Cloud.from_state(args.cloud_dir).registry_path)


def _registered(args, reg):
    # Like AWS, the local stand-in keeps a registry (`upcert certs list|deactivate|revoke`).
    if reg is not None:
        print(f"registered in the local stand-in's registry ({args.cloud_dir}) as ACTIVE")


def _i2c_address(text):
    """An I2C address option: 0x35, 53 (argparse names this function in its error)."""
    return int(text, 0)


def do_provision_chip(args):
    from . import provision_chip as pc

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
    from .provision_chip import rotate_chip
    from .validate import days

    reg = _registry(args)  # registered before it is staged (rotate_chip)
    res = rotate_chip(args.port, args.ca_dir, days=days(args.days),
                      log=lambda m: print(m, file=sys.stderr), registry=reg)
    _registered(args, reg)
    print(f"rotated {res.thing}: key slot {res.old_slot} -> {res.new_slot}, certificate id "
          f"{res.cert_id} committed")


def build_parser():
    ap = argparse.ArgumentParser(prog="upcert", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    ca = sub.add_parser("ca", help="local development CA").add_subparsers(dest="sub", required=True)
    p = ca.add_parser("init", help="make a CA, the broker's server certificate and a host identity")
    p.add_argument("--dir", default=str(home() / "ca"))
    p.add_argument("--key-type", choices=("rsa", "ec"), default="rsa",
                   help="rsa: RSA-2048 like Amazon Root CA 1; ec: P-256 like Amazon Root CA 3")
    p.add_argument("--server-name", action="append", default=None)
    p.add_argument("--force", action="store_true", help="replace an existing CA")
    p.set_defaults(fn=do_ca_init)

    ct = sub.add_parser("cert", help="certificates").add_subparsers(dest="sub", required=True)
    p = ct.add_parser(
        "inspect", help="a certificate's view as JSON",
        description="Print a certificate's view as JSON: subject_cn, issuer_cn, serial (hex), "
        "not_before/not_after (ISO-8601 UTC), public_key (type, bits, curve), "
        "signature_algorithm (AWS's name, else the OID), aws_accepts_signature, "
        "certificate_id (AWS: SHA-256 of the DER). PEM or DER; when the file holds several "
        "certificates (a chain, a bundle, concatenated DER) the first is shown and a 'note' "
        "says how many there are. Key bits and curve are given as far as the device knows "
        "them (RSA; EC on P-256/P-384/P-521), so both views can be compared.")
    p.add_argument("file", help="certificate file (PEM or DER)")
    p.add_argument("--device", action="store_true",
                   help="read it with the device's own reader (firmware/upcert/x509.py on the "
                   "MicroPython unix port): exactly what a board will see")
    p.set_defaults(fn=do_cert_inspect)

    cl = sub.add_parser("cloud", help="the local AWS IoT stand-in").add_subparsers(
        dest="sub", required=True)
    for name, fn in (("up", do_cloud_up), ("down", do_cloud_down), ("status", do_cloud_status)):
        p = cl.add_parser(name)
        p.add_argument("--dir", default=str(home() / "cloud"))
        p.add_argument("--ca-dir", default=str(home() / "ca"))
        if name == "up":
            from .faults import FAULTS

            p.add_argument("--port", type=int, default=None, help="default: a free port")
            p.add_argument("--fault", choices=tuple(FAULTS), default=None, help=(
                "for testing a device's error handling only: the provisioning service "
                "answers CreateCertificateFromCsr badly on purpose. "
                + "; ".join(f"{k}: {v}" for k, v in FAULTS.items())
                + ". Default: none (behaves like AWS)"))
        p.set_defaults(fn=fn)

    bd = sub.add_parser("board", help="emulated boards, and what a board holds").add_subparsers(
        dest="sub", required=True)
    for name, fn in (("run", do_board_run), ("start", do_board_start), ("stop", do_board_stop)):
        p = bd.add_parser(name)
        p.add_argument("--name", default="board1", help="board name under $UPCERT_HOME/boards")
        p.add_argument("--state", default=None, help="state folder of the board")
        p.add_argument("--flash", default=None,
                       help="flash image path (its folder holds the board's other state)")
        if name != "stop":
            p.add_argument("--heapsize", default=None, help="MicroPython GC heap, e.g. 156K")
            p.add_argument("--clock", choices=("set", "unset"), default=None)
            p.add_argument("--ntp", choices=("ok", "unreachable"), default=None)
            p.add_argument("--atecc608", choices=("blank", "tng", "none"), default=None,
                           help="fit an emulated ATECC608 (blank at 0x60, Trust&Go-style at "
                                "0x35) or remove it; kept in board.json")
            p.add_argument("--partitions", metavar="CSV", default=None, help=(
                "an ESP-IDF partition table to give the board from now on, as flashing it "
                "would, e.g. boards/esp32_generic/partitions.csv (adds the 'upcert' partition "
                "that store partition needs); default: MicroPython's stock 4 MiB table"))
        p.set_defaults(fn=fn)
    p = bd.add_parser("status", help="what the board holds (thing, store, certificate)")
    p.add_argument("--port", required=True)
    p.set_defaults(fn=do_board_status)

    ce = sub.add_parser("certs", help="certificates in the local stand-in's registry")
    ce = ce.add_subparsers(dest="sub", required=True)
    for name, fn, hlp in (("list", do_certs_list, "every certificate with its status"),
                          ("deactivate", _set_status("INACTIVE"), "set INACTIVE"),
                          ("revoke", _set_status("REVOKED"), "set REVOKED"),
                          ("activate", _set_status("ACTIVE"), "set ACTIVE again")):
        p = ce.add_parser(name, help=hlp)
        p.add_argument("--dir", default=str(home() / "cloud"))
        if name == "list":
            p.add_argument("--json", action="store_true")
        else:
            p.add_argument("cert_id", help="certificate id or a unique prefix (8+ hex digits)")
        p.set_defaults(fn=fn)
    p = sub.add_parser("rotate", help="ask a thing to rotate its certificate (an AWS IoT Job)")
    p.add_argument("--thing", required=True)
    p.add_argument("--dir", default=str(home() / "cloud"))
    p.set_defaults(fn=do_rotate)

    p = sub.add_parser("provision", help="write an identity onto a board")
    p.add_argument("--port", required=True, help="serial device of the board")
    p.add_argument("--thing", required=True)
    p.add_argument("--endpoint", required=True, help="HOST[:PORT] (default port 8883)")
    p.add_argument("--store", choices=("fs", "nvs", "partition", "atecc608"), default="fs", help=(
        "fs: DER files in /upcert.d; nvs: esp32.NVS namespace 'upcert'; partition: the raw "
        "data partition 'upcert' of boards/esp32_generic/partitions.csv (flash that table "
        "first; emulated board: `upcert board run --partitions ...`); atecc608: the key made and "
        "kept in an ATECC608 secure element (see --lock, --chip-address, --slot, --chip-cert)"))
    p.add_argument("--wifi-ssid", help="Wi-Fi network for the board (password from the "
                   "environment variable UPCERT_WIFI_PASSWORD, so it stays out of shell history)")
    # numbers stay text here: validate.py reads ASCII digits only (int() takes any Unicode
    # digit) and refuses a bad value in one line
    p.add_argument("--telemetry-interval", default=None, help="seconds, 1..86400 (default 60)")
    p.add_argument("--cert", help="device certificate (PEM or DER)")
    p.add_argument("--key", help="private key (PEM or DER: PKCS#1, SEC1 or PKCS#8)")
    p.add_argument("--root-ca", help="root CA(s) for the server, e.g. AmazonRootCA1.pem")
    p.add_argument("--ca-dir", default=str(home() / "ca"), help="local CA (when no --cert)")
    p.add_argument("--days", default="365", help="validity of a local-CA certificate, "
                   "1..3650 days")
    p.add_argument("--cloud-dir", default=str(home() / "cloud"),
                   help="local stand-in whose registry records the certificate, if it exists")
    p.add_argument("--board", default="esp32_generic", help="board definition under boards/")
    p.add_argument("--no-firmware", action="store_true", help="do not update the device files")
    p.add_argument("--no-reset", action="store_true", help="do not reboot the board afterwards")
    p.add_argument("--lock", action="store_true", help="atecc608: on a blank chip, write "
                   "upcert's slot layout and lock the config and data zones (PERMANENT)")
    p.add_argument("--chip-address", type=_i2c_address, default=0x60,
                   help="atecc608: 7-bit I2C address (0x60 blank, 0x35 Trust&Go, 0x36 TrustFLEX)")
    p.add_argument("--slot", type=int, default=0, help="atecc608: key slot of the device key")
    p.add_argument("--chip-cert", choices=("fs", "slot8"), default="fs",
                   help="atecc608: certificate on the flash, or in data slot 8 (<= 416 bytes)")
    p.set_defaults(fn=do_provision)
    ch = sub.add_parser("chip", help="ATECC608 secure element on a board").add_subparsers(
        dest="sub", required=True)
    p = ch.add_parser("rotate", help="new key in a spare key slot, certificate from the local "
                      "CA, staged and committed (no AWS needed)")
    p.add_argument("--port", required=True, help="serial device of the board")
    p.add_argument("--ca-dir", default=str(home() / "ca"), help="local CA that signs the CSR")
    p.add_argument("--days", default="365", help="validity of the new certificate, 1..3650 days")
    p.add_argument("--cloud-dir", default=str(home() / "cloud"),
                   help="local stand-in whose registry records the certificate, if it exists")
    p.set_defaults(fn=do_chip_rotate)
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "server_name", 1) is None:
        args.server_name = ["localhost"]
    try:
        rc = args.fn(args)
    except UpcertError as exc:
        print(f"upcert: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("upcert: interrupted", file=sys.stderr)
        return 130
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
