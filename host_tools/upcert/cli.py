"""The `upcert` command: parses arguments, calls the library, maps errors to one stderr line.

State lives under $UPCERT_HOME (default ./.state): ca/, cloud/, boards/<name>/.
"""

import argparse
import sys

from upcert import commands
from upcert.errors import UpcertError


def _i2c_address(text):
    """An I2C address option: 0x35, 53 (argparse names this function in its error)."""
    return int(text, 0)


def _aws_options(p, required=False):
    """--aws (when not required), --region, --profile: where in AWS a command works."""
    if not required:
        p.add_argument("--aws", action="store_true", help="on AWS IoT Core (boto3) instead of "
                       "the local stand-in")
    p.add_argument("--region", default=None, help="AWS region, e.g. eu-west-1 (default: "
                   "AWS_REGION or the profile's)")
    p.add_argument("--profile", default=None, help="AWS profile in ~/.aws (default: "
                   "AWS_PROFILE, or boto3's default credentials)")


def build_parser():
    ap = argparse.ArgumentParser(prog="upcert", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    ca = sub.add_parser("ca", help="local development CA").add_subparsers(dest="sub", required=True)
    p = ca.add_parser("init", help="make a CA, the broker's server certificate and a host identity")
    p.add_argument("--dir", default=str(commands.home() / "ca"))
    p.add_argument("--key-type", choices=("rsa", "ec"), default="rsa",
                   help="rsa: RSA-2048 like Amazon Root CA 1; ec: P-256 like Amazon Root CA 3")
    p.add_argument("--server-name", action="append", default=None)
    p.add_argument("--force", action="store_true", help="replace an existing CA")
    p.set_defaults(fn=commands.do_ca_init)

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
    p.set_defaults(fn=commands.do_cert_inspect)

    cl = sub.add_parser("cloud", help="the local AWS IoT stand-in").add_subparsers(
        dest="sub", required=True)
    for name, fn in (("up", commands.do_cloud_up), ("down", commands.do_cloud_down), ("status", commands.do_cloud_status)):
        p = cl.add_parser(name)
        p.add_argument("--dir", default=str(commands.home() / "cloud"))
        p.add_argument("--ca-dir", default=str(commands.home() / "ca"))
        if name == "up":
            from upcert.cloud.faults import FAULTS

            p.add_argument("--port", type=int, default=None, help="default: a free port")
            p.add_argument("--alpn-port", type=int, default=None, help="the port-443 listener's "
                           "port (MQTT only with ALPN x-amzn-mqtt-ca, as AWS serves 443); "
                           "default: a free port")
            p.add_argument("--no-alpn", action="store_true", help="no port-443 listener")
            p.add_argument("--fault", choices=tuple(FAULTS), default=None, help=(
                "for testing a device's error handling only: the provisioning service "
                "answers CreateCertificateFromCsr badly on purpose. "
                + "; ".join(f"{k}: {v}" for k, v in FAULTS.items())
                + ". Default: none (behaves like AWS)"))
        p.set_defaults(fn=fn)

    bd = sub.add_parser("board", help="emulated boards, and what a board holds").add_subparsers(
        dest="sub", required=True)
    for name, fn in (("run", commands.do_board_run), ("start", commands.do_board_start), ("stop", commands.do_board_stop)):
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
    p.set_defaults(fn=commands.do_board_status)

    ce = sub.add_parser("certs", help="certificates in the local stand-in's registry")
    ce = ce.add_subparsers(dest="sub", required=True)
    for name, fn, hlp in (("list", commands.do_certs_list, "every certificate with its status"),
                          ("deactivate", commands._set_status("INACTIVE"), "set INACTIVE"),
                          ("revoke", commands._set_status("REVOKED"), "set REVOKED"),
                          ("activate", commands._set_status("ACTIVE"), "set ACTIVE again")):
        p = ce.add_parser(name, help=hlp)
        p.add_argument("--dir", default=str(commands.home() / "cloud"))
        _aws_options(p)
        if name == "list":
            p.add_argument("--json", action="store_true")
        else:
            p.add_argument("cert_id", help="certificate id or a unique prefix (8+ hex digits)")
        p.set_defaults(fn=fn)
    p = sub.add_parser("rotate", help="ask a thing to rotate its certificate (an AWS IoT Job)")
    p.add_argument("--thing", required=True)
    p.add_argument("--dir", default=str(commands.home() / "cloud"))
    _aws_options(p)
    p.set_defaults(fn=commands.do_rotate)

    aw = sub.add_parser("aws", help="AWS IoT Core set-up (boto3)").add_subparsers(
        dest="sub", required=True)
    p = aw.add_parser("setup", help="create or update what a fleet needs in the account",
                      description=(
        "Creates or updates, idempotently, and prints for each: created, updated or unchanged: "
        "the device policy upcert-device (a thing connects only under its own client id and "
        "uses only things/<thing>/..., its own jobs topics and the Fleet Provisioning topics), "
        "the claim policy upcert-claim (CreateCertificateFromCsr and the claim template only), "
        "the IAM role AWS IoT provisions with, the provisioning templates upcert-rotation "
        "(certificate rotation of an existing thing) and upcert-claim (provisioning by claim), "
        "a claim certificate for the claim template, the iot:Data-ATS endpoint and Amazon Root "
        "CA 1 and 3 (from certifi, checked by fingerprint). Files go to "
        "$UPCERT_HOME/aws/<region>/: aws.json, AmazonRootCA.pem, claim/. The claim "
        "certificate's private key is made by AWS (CreateKeysAndCertificate) and written to "
        "claim/claim.key.pem (0600): in provisioning by claim, AWS's design, that key leaves "
        "AWS and is shared by a batch of boards, so the claim policy lets it do nothing but ask "
        "for a board's own certificate."))
    _aws_options(p, required=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--role-arn", default=None, help="an existing IAM role AWS IoT may assume "
                   "for provisioning (e.g. with the managed policy AWSIoTThingsRegistration)")
    g.add_argument("--create-role", action="store_true", help="create the role "
                   "upcert-provisioning with AWS's managed policy AWSIoTThingsRegistration")
    p.set_defaults(fn=commands.do_aws_setup)
    p = aw.add_parser("register-ca", help="register a CA with AWS IoT (bring your own CA)",
                      description="Proves possession of the CA's key (registration code, a "
                      "verification certificate signed by it) and registers the CA ACTIVE, so "
                      "`upcert provision --aws --ca-dir DIR` can register its certificates "
                      "instead of having AWS issue them.")
    _aws_options(p, required=True)
    p.add_argument("--ca-dir", default=str(commands.home() / "ca"),
                   help="the CA's folder (ca.pem, ca.key: `upcert ca init`)")
    p.add_argument("--auto-registration", action="store_true", help="let devices whose "
                   "certificates this CA signed register themselves at first connect (JITR)")
    p.set_defaults(fn=commands.do_aws_register_ca)

    p = sub.add_parser("provision", help="write an identity onto a board")
    p.add_argument("--port", required=True, help="serial device of the board")
    p.add_argument("--thing", required=True)
    p.add_argument("--endpoint", default=None, help="HOST[:PORT] (default port 8883); with "
                   "--aws, the account's endpoint is used")
    p.add_argument("--store", choices=("fs", "nvs", "partition", "atecc608"), default="fs", help=(
        "fs: DER files in /upcert.d; nvs: esp32.NVS namespace 'upcert'; partition: the raw "
        "data partition 'upcert' of boards/esp32_generic/partitions.csv (flash that table "
        "first; emulated board: `upcert board run --partitions ...`); atecc608: the key made and "
        "kept in an ATECC608 secure element (see --lock, --chip-address, --slot, --chip-cert)"))
    p.add_argument("--wifi-ssid", help="Wi-Fi network for the board (password from the "
                   "environment variable UPCERT_WIFI_PASSWORD, so it stays out of shell history)")
    p.add_argument("--no-wifi", action="store_true", help="no Wi-Fi settings: the board is on a "
                   "network without them (the emulated board; Wi-Fi brought up by your own "
                   "boot.py). Without it, a board whose definition joins over Wi-Fi needs "
                   "--wifi-ssid")
    # numbers stay text here: validate.py reads ASCII digits only (int() takes any Unicode
    # digit) and refuses a bad value in one line
    p.add_argument("--telemetry-interval", default=None, help="seconds, 1..86400 (default 60)")
    p.add_argument("--cert", help="device certificate (PEM or DER)")
    p.add_argument("--key", help="private key (PEM or DER: PKCS#1, SEC1 or PKCS#8)")
    p.add_argument("--root-ca", help="root CA(s) for the server, e.g. AmazonRootCA1.pem")
    p.add_argument("--ca-dir", default=None, help="local CA (when no --cert; default "
                   "$UPCERT_HOME/ca); with --aws, a CA registered by `upcert aws register-ca` "
                   "whose certificate is then registered instead of one AWS issues")
    p.add_argument("--days", default="365", help="validity of a local-CA certificate, "
                   "1..3650 days")
    p.add_argument("--cloud-dir", default=str(commands.home() / "cloud"),
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
    p.add_argument("--claim", action="store_true", help="provisioning by claim: write the "
                   "batch's claim certificate instead of an identity; at first boot the board "
                   "makes its own key and gets its certificate through the claim template, then "
                   "erases the claim. The claim is the local stand-in's (--cloud-dir); with --aws the "
                   "one `upcert aws setup` made; or --claim-cert/--claim-key/--root-ca")
    p.add_argument("--claim-cert", help="claim certificate (PEM or DER), with --claim")
    p.add_argument("--claim-key", help="claim private key (PEM or DER), with --claim")
    p.add_argument("--claim-template", default="upcert-claim",
                   help="provisioning template the claim may use (default upcert-claim)")
    _aws_options(p)
    p.add_argument("--thing-type", default=None, help="--aws: the thing's type (created if "
                   "missing)")
    p.add_argument("--thing-group", default=None, help="--aws: a thing group to put it in "
                   "(created if missing)")
    p.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                   help="--aws: a thing attribute (repeat for more)")
    p.add_argument("--aws-insecure-key-travels", action="store_true", help=(
        "--aws: have AWS make the key (CreateKeysAndCertificate): the private key then crosses "
        "the network and this host on its way to the board. Default: the key is made on the "
        "board and only its CSR leaves it"))
    p.set_defaults(fn=commands.do_provision)
    p = sub.add_parser("soak", help="N emulated boards against the local stand-in under random "
                       "faults; a report of what was lost and how long recoveries took")
    p.add_argument("--boards", default="2", help="emulated boards, 1..32 (default 2)")
    p.add_argument("--minutes", default="2", help="length of the run; faults land in its first "
                   "four fifths (default 2)")
    p.add_argument("--faults", default="all", help="comma-separated kinds, or all: wifi, dns, "
                   "stall, slow, broker, service, power, job, expiry (short certificates)")
    p.add_argument("--rate", default=None, help="faults per minute (default: every kind once "
                   "in the fault window, at least 2/min)")
    p.add_argument("--seed", default=None, help="random seed (a run is repeatable with it)")
    p.add_argument("--out", default=None, help="folder for the report and every state "
                   "(default $UPCERT_HOME/soak/<seed>)")
    p.set_defaults(fn=commands.do_soak)
    ch = sub.add_parser("chip", help="ATECC608 secure element on a board").add_subparsers(
        dest="sub", required=True)
    p = ch.add_parser("rotate", help="new key in a spare key slot, certificate from the local "
                      "CA, staged and committed (no AWS needed)")
    p.add_argument("--port", required=True, help="serial device of the board")
    p.add_argument("--ca-dir", default=str(commands.home() / "ca"), help="local CA that signs the CSR")
    p.add_argument("--days", default="365", help="validity of the new certificate, 1..3650 days")
    p.add_argument("--cloud-dir", default=str(commands.home() / "cloud"),
                   help="local stand-in whose registry records the certificate, if it exists")
    p.set_defaults(fn=commands.do_chip_rotate)
    from upcert.factory import cli as factory_cli

    factory_cli.add_parsers(sub)  # image, flash-firmware, batch, fleet
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
