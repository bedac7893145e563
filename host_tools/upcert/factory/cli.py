"""The production line's sub-commands of `upcert` (image, flash-firmware, batch, fleet), added to
its parser by upcert.cli. Handlers print results on stdout, progress on stderr, and raise
UpcertError for one-line errors."""

import json
import os
import sys
from pathlib import Path

from upcert.errors import UpcertError
from upcert.factory.registry import registry


def home():
    return Path(os.environ.get("UPCERT_HOME", ".state"))


def add_parsers(sub):
    """Add image, flash-firmware, batch and fleet to the `upcert` sub-parsers `sub`."""
    im = sub.add_parser("image", help="per-board flash images in ESP-IDF's formats").add_subparsers(
        dest="sub", required=True)
    p = im.add_parser(
        "build", help="a board's flash as files: partition table, littlefs, NVS, manifest",
        description="Build one board's flash images into --out: partition-table.bin (from the "
        "board's CSV), vfs.bin (littlefs: device package, config, roots and, for store fs, the "
        "credentials), nvs.bin (store nvs, Espressif's generator), upcert.bin (store "
        "partition), manifest.json (offsets, sizes, sha256). The private key is made on this "
        "host and travels inside the images (inherent to pre-built images: keep the folder as "
        "you keep keys; it is 0700, its files 0600). For keys made on the board, use "
        "`upcert provision --claim`.")
    p.add_argument("--thing", required=True)
    p.add_argument("--endpoint", required=True, help="HOST[:PORT] (default port 8883)")
    p.add_argument("--store", choices=("fs", "nvs", "partition"), default="fs")
    p.add_argument("--board", default="esp32_generic", help="board definition under boards/")
    p.add_argument("--out", required=True, help="folder for the images (made 0700)")
    p.add_argument("--wifi-ssid", help="Wi-Fi network (password from UPCERT_WIFI_PASSWORD)")
    p.add_argument("--no-wifi", action="store_true", help="no Wi-Fi settings (emulated board)")
    p.add_argument("--telemetry-interval", default=None, help="seconds, 1..86400")
    p.add_argument("--cert", help="device certificate (PEM or DER) instead of the local CA's")
    p.add_argument("--key", help="its private key (PEM or DER)")
    p.add_argument("--root-ca", help="root CA(s) for the server, e.g. AmazonRootCA1.pem")
    p.add_argument("--ca-dir", default=str(home() / "ca"), help="local CA (when no --cert)")
    p.add_argument("--days", default="365", help="validity of a local-CA certificate")
    p.add_argument("--cloud-dir", default=str(home() / "cloud"),
                   help="local stand-in whose registry records the certificate, if it exists")
    p.add_argument("--merge", action="store_true", help="also merged.bin: one image from 0x0 "
                   "with --firmware (esptool merge-bin)")
    p.add_argument("--firmware", help="MicroPython's firmware.bin for the board (with --merge)")
    p.set_defaults(fn=do_image_build)

    p = im.add_parser("boot", help="an emulated board whose flash is exactly an image folder",
                      description="Write an image folder onto an emulated board's flash (as "
                      "esptool would: table, littlefs, NVS, partitions; the rest erased), start "
                      "it and print its serial port.")
    p.add_argument("--images", required=True, help="folder made by `upcert image build`")
    p.add_argument("--name", default="board1", help="board name under $UPCERT_HOME/boards")
    p.add_argument("--state", default=None, help="state folder of the board")
    p.add_argument("--heapsize", default=None, help="MicroPython GC heap, e.g. 156K")
    p.set_defaults(fn=do_image_boot)

    p = im.add_parser("show", help="what an image folder holds (manifest, NVS pages); no key")
    p.add_argument("--images", required=True)
    p.set_defaults(fn=do_image_show)

    p = sub.add_parser(
        "flash-firmware", help="write MicroPython and an image folder to a board with esptool",
        description="Erase the chip, write the firmware and the images at the manifest's "
        "offsets, verify by esptool's read-back hashes, then wait for the REPL and run "
        "`board status`. Needs a real chip (untested here: the emulated board has no ROM "
        "bootloader).")
    p.add_argument("--port", required=True)
    p.add_argument("--firmware", required=True, help="MicroPython's firmware.bin")
    p.add_argument("--images", help="folder made by `upcert image build`")
    p.add_argument("--baud", type=int, default=460800)
    p.add_argument("--no-erase", action="store_true", help="write without erasing the chip")
    p.add_argument("--dry-run", action="store_true", help="print the esptool calls only")
    p.set_defaults(fn=do_flash_firmware)

    p = sub.add_parser(
        "batch", help="provision many boards at once, with an inventory and an audit log",
        description="Provision every board of a CSV (header target,thing,store,attributes; "
        "target: a serial port, or a folder to build that board's images in) in parallel, "
        "with a live table and a summary. Each board is recorded in the inventory (SQLite, or "
        "PostgreSQL by URL) whose constraints refuse a thing, certificate or chip given twice; "
        "a rerun skips boards done and finishes or rolls back half-done ones. Keys are made on "
        "this host by the local CA and go only to the board (or its images). With --aws, on "
        "AWS IoT Core as `upcert provision --aws` does (key and CSR made on the board; the "
        "columns thing_type and thing_group apply); image folders then get local-CA "
        "certificates registered with AWS (`upcert aws register-ca` first).")
    p.add_argument("--manifest", required=True, help="the batch CSV")
    p.add_argument("--endpoint", help="HOST[:PORT] every board connects to (not with --aws: "
                   "the endpoint `upcert aws setup` found)")
    p.add_argument("--inventory", default=None, help="SQLite file (default "
                   "$UPCERT_HOME/inventory.sqlite) or postgresql://user@host/db")
    p.add_argument("--audit", default=None, help="audit log, JSON lines (default "
                   "$UPCERT_HOME/audit.jsonl)")
    p.add_argument("--station", default=None, help="this station's name (default "
                   "$UPCERT_STATION or the host name)")
    p.add_argument("--jobs", type=int, default=4, help="boards at once (default 4)")
    p.add_argument("--wifi-ssid", help="Wi-Fi network (password from UPCERT_WIFI_PASSWORD)")
    p.add_argument("--no-wifi", action="store_true")
    p.add_argument("--telemetry-interval", default=None, help="seconds, 1..86400")
    p.add_argument("--days", default="365", help="validity of the certificates")
    p.add_argument("--board", default="esp32_generic")
    p.add_argument("--ca-dir", default=str(home() / "ca"))
    p.add_argument("--cloud-dir", default=str(home() / "cloud"))
    p.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    _aws_options(p)
    p.set_defaults(fn=do_batch)

    fl = sub.add_parser("fleet", help="the fleet's certificates").add_subparsers(
        dest="sub", required=True)
    p = fl.add_parser(
        "report", help="expiring, never rotated, inactive on boards, on no board",
        description="From the inventory and the local stand-in's registry (with --aws, the "
        "region's certificates in AWS IoT): certificates expiring within --days, boards never "
        "rotated, INACTIVE or REVOKED certificates still on boards (the inventory's), ACTIVE "
        "certificates on no board. A table, --json, and with --png a timeline of expiry dates.")
    p.add_argument("--days", type=int, default=30, help="expiry horizon (default 30)")
    p.add_argument("--inventory", default=None)
    p.add_argument("--cloud-dir", default=str(home() / "cloud"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--png", help="write the expiry timeline to this PNG file")
    _aws_options(p)
    p.set_defaults(fn=do_fleet_report)
    return sub


def _aws_options(p):
    # as upcert.cli's: --aws, --region, --profile
    p.add_argument("--aws", action="store_true", help="on AWS IoT Core (boto3) instead of "
                   "the local stand-in")
    p.add_argument("--region", default=None, help="AWS region, e.g. eu-west-1 (default: "
                   "AWS_REGION or the profile's)")
    p.add_argument("--profile", default=None, help="AWS profile in ~/.aws (default: "
                   "AWS_PROFILE, or boto3's default credentials)")


def _aws_errors(args):
    # Any AWS error, however deep, as one AwsError line naming the region and profile.
    import contextlib

    if not getattr(args, "aws", False):
        return contextlib.nullcontext()
    from upcert.aws.client import errors

    return errors(args.region, args.profile)


def _inventory(args):
    from upcert.factory.inventory import open_inventory

    return open_inventory(args.inventory or home() / "inventory.sqlite")


def do_batch(args):
    with _aws_errors(args):
        return _do_batch(args)


def _do_batch(args):
    from rich.console import Console

    from upcert.factory import batch

    if args.jobs < 1 or args.jobs > 64:
        raise UpcertError(f"--jobs {args.jobs}: give 1..64 boards at once")
    if args.aws and args.endpoint:
        raise UpcertError("--aws connects the boards to the endpoint `upcert aws setup` found: "
                          "leave out --endpoint")
    if not args.aws and not args.endpoint:
        raise UpcertError("--endpoint HOST[:PORT] is needed (or --aws: the endpoint `upcert aws "
                          "setup` found)")
    args.thing = "batch"  # checked per row; _checked needs a valid name
    args.endpoint = args.endpoint or "localhost"  # checked when given; --aws: the account's
    wifi, extra, days = _checked(args, local_ca=True)
    jobs = batch.read_manifest(args.manifest)
    station = args.station or batch.default_station()
    if args.aws:
        line_for = _aws_line(args, jobs)
    else:
        for j in jobs:
            if j.thing_type or j.thing_group:
                raise UpcertError(f"{args.manifest}:{j.line}: thing_type and thing_group apply "
                                  "on AWS IoT (--aws); the local stand-in has no thing types "
                                  "or groups: leave them empty, or use attributes")
        line_for = None
    inv = _inventory(args)
    audit = batch.Audit(args.audit or home() / "audit.jsonl", station)
    if line_for is not None:
        line = line_for(inv, audit, station=station, wifi=wifi, extra=extra, days=days,
                        board=args.board)
    else:
        line = batch.Line(inv, audit, endpoint=args.endpoint, ca_dir=args.ca_dir,
                          cloud_dir=args.cloud_dir, station=station, wifi=wifi, extra=extra,
                          days=days, board=args.board)
    try:
        batch.run_batch(jobs, line, args.jobs)
    finally:
        audit.close()
    if args.json:
        print(json.dumps([{"thing": j.thing, "target": j.target, "store": j.store,
                           "result": j.result, "cert_id": j.cert_id,
                           "seconds": round(j.seconds, 2), "detail": j.detail} for j in jobs],
                         indent=2))
    else:
        Console(width=160).print(batch.summary_table(jobs))
    failed = [j for j in jobs if j.result == "failed"]
    print(f"{len(jobs) - len(failed)} of {len(jobs)} boards done or already done; inventory "
          f"{inv.where}", file=sys.stderr)
    return 1 if failed else 0


def _aws_line(args, jobs):
    """Everything `batch --aws` checks before a board is touched; a maker of its AwsLine."""
    import functools

    from upcert.aws.client import Aws
    from upcert.aws.fleet import load_settings
    from upcert.factory import batch_aws
    from upcert.provision_aws import parse_attributes

    for j in jobs:
        try:
            parse_attributes(f"{k}={v}" for k, v in j.attributes.items())
        except UpcertError as e:
            raise UpcertError(f"{args.manifest}:{j.line}: {str(e).replace('--attr ', 'attribute ')}"
                              ) from None
    aws = Aws(region=args.region, profile=args.profile)
    settings = load_settings(home(), aws.region)
    local = batch_aws.check_images_ca(aws, args.ca_dir) if any(j.images for j in jobs) else None
    return functools.partial(batch_aws.AwsLine, aws=aws, home=home(), settings=settings,
                             local=local)


def do_fleet_report(args):
    with _aws_errors(args):
        return _do_fleet_report(args)


def _do_fleet_report(args):
    from upcert.factory import fleet

    if args.aws:
        from upcert.aws.client import Aws
        from upcert.factory.registry import aws_registry

        reg = aws_registry(Aws(region=args.region, profile=args.profile), home())
    else:
        from upcert.factory.registry import fleet_registry

        reg = fleet_registry(args.cloud_dir)
    rep = fleet.report(_inventory(args), reg, days=args.days)
    if args.png:
        fleet.timeline_png(rep, args.png)
    if args.json:
        print(json.dumps(rep, indent=2, default=str))
    else:
        fleet.print_report(rep)


def _checked(args, local_ca):
    from upcert.board.provision import check_options

    return check_options(args, local_ca)


def do_image_build(args):
    from upcert.board import provision as p
    from upcert.cloud.admin import registry_state
    from upcert.factory import image

    files = bool(args.cert or args.key or args.root_ca)
    if args.firmware and not args.merge:
        raise UpcertError("--firmware goes with --merge")
    wifi, extra, days = _checked(args, local_ca=not files)
    cfg = p.make_config(args.thing, args.endpoint, args.store, extra, wifi)
    from upcert.validate import check_config

    check_config(cfg)
    if files:
        cert, key, roots = p.file_credentials(args.cert, args.key, args.root_ca)
    else:
        cert, key, roots = p.local_credentials(args.ca_dir, args.thing, days=days)
    known = registry_state(args.cloud_dir, cert, cfg["thing"])
    m = image.build(args.out, cfg, cert, key, roots, board=args.board,
                    firmware=args.firmware, merge=args.merge)
    reg = registry(args.cloud_dir)
    if reg is not None and known != "active":
        p.Registration(reg, cert, cfg["thing"]).register()
        print(f"registered in the local stand-in's registry ({args.cloud_dir}) as ACTIVE",
              file=sys.stderr)
    for f in m["files"] + ([m["merged"]] if "merged" in m else []):
        print(f"{f['offset']:#08x} {f['size']:>8} {f['file']}")
    print(f"certificate id {m['cert_id']}, expires {m['not_after']}")
    print(f"images for {m['thing']} ({m['store']} store) in {args.out}; the private key is "
          "inside them")


def do_image_boot(args):
    from upcert.emu.board import EmulatedBoard
    from upcert.emu.config import use_images
    from upcert.validate import board_state_dir

    state = Path(args.state) if args.state else board_state_dir(home(), args.name, True)
    use_images(state, args.images)
    print(EmulatedBoard(state, heapsize=args.heapsize).start())


def do_image_show(args):
    from upcert.factory import image, nvs

    m = image.read_manifest(args.images)
    out = {k: m[k] for k in ("thing", "store", "board", "chip", "flash_size", "cert_id",
                             "not_after")}
    out["files"] = m["files"]
    nvs_file = Path(args.images) / "nvs.bin"
    if nvs_file.exists():
        data = nvs_file.read_bytes()
        out["nvs_pages"] = nvs.summary(data)
        out["nvs_keys"] = {ns: {k: f"{type(v).__name__} ({len(v)} bytes)"
                                if isinstance(v, bytes) else type(v).__name__
                                for k, v in keys.items()} for ns, keys in nvs.read(data).items()}
    print(json.dumps(out, indent=2))


def do_flash_firmware(args):
    from upcert.factory import flash

    calls = flash.plan(args.port, args.firmware, args.images, baud=args.baud,
                       erase=not args.no_erase)
    if args.dry_run:
        for c in calls:
            print("esptool " + " ".join(c))
        return
    st = flash.run(calls, args.port, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(st, indent=2, default=str))
