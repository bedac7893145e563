"""Provisioning one board: check the credentials, install the firmware, write config and
credentials through the board's own store code, read back, test-load into tls, report.

Nothing is written to the board before every host-side check has passed and the board has said
that its firmware can run the device code, with room for it (firmware.check_board, check_room).
The session with the board has an overall deadline and ends at once if the board reboots
(transport.Board); a certificate is registered before the board is told to use it.
"""

import hashlib
import json
import time
from dataclasses import dataclass

from upcert.board import firmware
from upcert.board.transport import Board, BoardReset
from upcert.errors import UpcertError
from upcert.pki import certs
from upcert.pki.ca import LocalCa

STORES = ("fs", "nvs", "partition")
CONFIG_PATH = "/upcert.d/config.json"
ROOTS_PATH = "/upcert.d/roots.der"
PARTITION_LABEL = "upcert"  # boards/esp32_generic/partitions.csv
_RECORD_HEADER = 64  # bytes before cert + key in a partition record (store_part.py _DATA)
_TABLE = "boards/esp32_generic/partitions.csv"
DEADLINE_S = 120  # a provisioning session, plus the time its files take to send


@dataclass
class Result:
    thing: str
    store: str
    cert_id: str
    not_after: object
    issuer_check: str
    warnings: list
    seconds: float


def parse_endpoint(text):
    """'host[:port]' -> (host, port); port defaults to 8883 (AWS IoT MQTT over TLS)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, 8883
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UpcertError(f"endpoint {text!r}: port must be a number 1..65535")
    return host, int(port)


def check_options(args, local_ca):
    """The board options of `provision`, `image build` and `batch` (argparse args: thing,
    endpoint, telemetry_interval, days, wifi_ssid, no_wifi, board) checked before anything is
    written: (wifi, extra config, days)."""
    import os

    from upcert import validate as v
    from upcert.board.firmware import board_network

    v.thing_name(args.thing, local_ca=local_ca)
    if args.endpoint is not None:
        v.endpoint(args.endpoint)
    interval = v.telemetry_interval(args.telemetry_interval)
    days = v.days(args.days)
    wifi = None
    if args.wifi_ssid is not None:
        if args.no_wifi:
            raise UpcertError("--wifi-ssid and --no-wifi contradict each other: give one")
        wifi = v.wifi(args.wifi_ssid, os.environ.get("UPCERT_WIFI_PASSWORD", ""))
    elif not args.no_wifi and board_network(args.board) == "wifi":
        # Else the board starts, finds no network and loops "Wi-Fi is down and config has no
        # 'wifi'": refused now, before anything is written.
        raise UpcertError(
            f"board {args.board} joins the network over Wi-Fi, and no --wifi-ssid was given: "
            "give --wifi-ssid NAME (the password in the environment variable "
            "UPCERT_WIFI_PASSWORD), or --no-wifi when the board is on a network without it "
            "(the emulated board, or Wi-Fi your own boot.py brings up)")
    return wifi, {} if interval is None else {"telemetry_interval_s": interval}, days


def make_config(thing, endpoint, store="fs", extra=None, wifi=None):
    """The device's config.json as a dict. wifi: (ssid, password) or None when the board's
    network comes up by other means (its own boot.py, Ethernet)."""
    if store not in STORES:
        raise UpcertError(f"unknown store {store!r}: choose one of {', '.join(STORES)}")
    if not thing or len(thing.encode()) > 128 or any(c in thing for c in "+#/"):
        raise UpcertError(
            f"thing name {thing!r}: 1..128 bytes without '+', '#' or '/' (AWS client id rules)"
        )
    host, port = parse_endpoint(endpoint)
    cfg = {"thing": thing, "client_id": thing, "endpoint": host, "port": port,
           "store": {"kind": store}}
    if store == "nvs":
        cfg["store"]["namespace"] = "upcert"
    if store == "partition":
        cfg["store"]["label"] = PARTITION_LABEL
    if wifi:
        ssid, password = wifi
        if not 0 < len(ssid.encode()) <= 32:
            raise UpcertError(f"Wi-Fi SSID {ssid!r}: 1..32 bytes")
        cfg["wifi"] = {"ssid": ssid, "password": password or ""}
    cfg.update(extra or {})
    return cfg


def local_credentials(ca_dir, thing, days=365):
    """A fresh P-256 key and a certificate from the local CA (development)."""
    ca = LocalCa.load(ca_dir)
    key = certs.generate_key("ec")
    cert = ca.issue_device(thing, key.public_key(), days=days)
    return cert, key, [ca.certificate]


def file_credentials(cert_file, key_file, root_file):
    if not (cert_file and key_file and root_file):
        raise UpcertError("--cert, --key and --root-ca go together (or give none to use the local CA)")
    cert = certs.load_certificate(cert_file)
    key = certs.load_private_key(key_file)
    roots = certs.load_certificates(root_file)
    return cert, key, roots


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _write_checked(b, path, data):
    b.write_file(path, data)
    if b.sha256_file(path) != _sha(data):
        raise UpcertError(f"{path} on the board does not read back as written")


def _store_room(kind, cert_der, key_der):
    """Files a store writes on the board's filesystem, for the room check (fs: *.tmp, then
    renamed; the other stores keep credentials outside the filesystem)."""
    if kind != "fs":
        return []
    return [("/upcert.d/cert.der.tmp", cert_der), ("/upcert.d/key.der.tmp", key_der)]


class Registration:
    """A new certificate in the local stand-in's registry (or None: no registry), registered
    ACTIVE before the board is told to use it. failed() settles it when provisioning fails
    afterwards: the board is asked which certificate it holds; one it does not hold is set
    INACTIVE again (the registry keeps no certificate that was never in use as ACTIVE), one it
    holds stays ACTIVE. The failure's message gets a note saying which."""

    def __init__(self, registry, cert, thing):
        self.registry, self.thing = registry, thing
        self.done = False  # registered by us
        self.use(cert)

    def use(self, cert, thing=None):
        """The certificate (made on the way, e.g. from a chip's CSR) and its thing."""
        self.cert = cert
        self.cert_id = certs.cert_id(cert) if cert is not None else None
        self.thing = thing or self.thing

    def register(self):
        if self.registry is None or self.cert is None:
            return
        rec = self.registry.get(self.cert_id)
        if rec is None:
            self.registry.register(self.cert, self.thing)
            self.done = True
        elif rec["thing"] != self.thing:
            raise UpcertError(f"certificate {self.cert_id[:16]} is in the registry for thing "
                              f"{rec['thing']!r}, not {self.thing!r}: use a certificate of "
                              "this thing's own")
        elif rec["status"] != "ACTIVE":
            raise UpcertError(f"certificate {self.cert_id[:16]} is {rec['status']} in the "
                              "registry, so the broker would refuse it: use a new certificate")

    def failed(self, exc, port, timeout_s=10):
        """Settle after `exc`; an UpcertError's message gets the outcome (exc.args)."""
        if not self.done:
            return
        short = self.cert_id[:16]
        # After a reboot, let the board come up before asking it (Board.open boot_wait_s).
        held = held_certificate(port, timeout_s, boot_wait_s=5 if isinstance(exc, BoardReset)
                                else 0)
        if held == self.cert_id:
            note = f"the board holds the new certificate {short}, registered ACTIVE"
        elif held is not None:
            self.registry.set_status(self.cert_id, "INACTIVE")
            self.done = False
            note = (f"the board kept its old identity; certificate {short} was set INACTIVE "
                    "again in the registry")
        else:
            note = (f"could not tell which certificate the board holds, so certificate {short} "
                    f"stays ACTIVE in the registry: see `upcert board status --port {port}`")
        if isinstance(exc, UpcertError) and exc.args:
            exc.args = (f"{exc.args[0]}; {note}",) + exc.args[1:]


def held_certificate(port, timeout_s=10, deadline_s=30, boot_wait_s=0):
    """Id of the certificate the board's store holds; "" when it holds none; None when that
    cannot be told (the board does not answer, its store cannot be read)."""
    try:
        st = status(port, timeout_s=timeout_s, deadline_s=deadline_s, boot_wait_s=boot_wait_s)
    except UpcertError:
        return None
    if "cert_id" in st:
        return st["cert_id"]
    if str(st.get("error", "")).startswith("StoreError"):
        return ""  # no credentials (or only a half-written pair the store discards)
    return None


def provision(port, cfg, cert, key, roots, *, board="esp32_generic", install=True,
              reset=True, log=print, timeout_s=10, deadline_s=DEADLINE_S, registry=None):
    """Check, write, verify. Returns Result; raises UpcertError before any write on bad input.

    Nothing is written before the board has said what it runs and it can run the device code
    (firmware.check_board, check_room). deadline_s bounds the whole session with the board
    (plus the time the files to send take, firmware.SEND_BYTES_PER_S); past it, or when the
    board reboots meanwhile, one BoardTimeout/BoardReset line. registry (the local stand-in's
    Registry, or anything with get/register/set_status): the certificate is registered ACTIVE
    before the board is told to use it; if provisioning fails after that, the board is asked
    which certificate it holds, and one it does not hold is set INACTIVE again."""
    from upcert.validate import check_config; check_config(cfg)  # noqa: E702, I001 (validate.py)
    started = time.monotonic()
    report = certs.check_device_credentials(cert, key, roots[0] if len(roots) == 1 else None)
    if len(roots) > 1:
        # A bundle: accept when any root verifies the issuer.
        for root in roots:
            try:
                report = certs.check_device_credentials(cert, key, root)
            except certs.CertError:
                continue
            if report.issuer_check == "verified":
                break
    if report.subject_cn and report.subject_cn != cfg["thing"]:
        report.warnings.append(
            f"certificate CN {report.subject_cn!r} differs from thing {cfg['thing']!r}"
        )
    cert_der = certs.cert_to_der(cert)
    key_der = certs.key_to_der(key)
    roots_der = b"".join(certs.cert_to_der(r) for r in roots)
    config_bytes = json.dumps(cfg, separators=(",", ":")).encode()

    kind = cfg["store"]["kind"]
    reg = Registration(registry, cert, cfg["thing"])
    try:
        with Board(port, timeout_s=timeout_s, deadline_s=deadline_s, operation="provision") as b:
            info = b.probe(firmware.probe_modules(kind))
            firmware.check_board(info, kind)
            if kind == "partition":
                _check_partition(b, cfg["store"].get("label", PARTITION_LABEL),
                                 len(cert_der) + len(key_der))
            mine = [(CONFIG_PATH, config_bytes), (ROOTS_PATH, roots_der)]
            p = firmware.plan(b, info, board, extra=mine + _store_room(kind, cert_der, key_der),
                              files_wanted=install)
            if install:
                firmware.install(b, board=board, log=log, info=info, planned=p)
            else:
                firmware.check_room(info, p.extra, p.have)
            for path, data in mine:
                if (path, data) in p.extra:
                    _write_checked(b, path, data)
            reg.register()  # before the board is told to use the certificate
            # Credentials go through the device's own store code (firmware/upcert/hostcalls.py),
            # so host and device agree on layout. Each call loads the package afresh: the one
            # just installed, not what the interrupted agent had loaded (Board.call).
            b.call("hostcalls.write_credentials", cert_der, key_der, CONFIG_PATH,
                   what="writing the credentials")
            back = b.call("hostcalls.credential_digests", CONFIG_PATH,
                          what="reading the credentials back")
            if back != [_sha(cert_der), _sha(key_der)]:
                raise UpcertError(f"credentials in the {kind} store do not read back as written")
            b.call("hostcalls.load_tls", CONFIG_PATH, ROOTS_PATH,
                   what="loading the credentials into tls")
            if reset:
                b.hard_reset()
    except Exception as exc:
        reg.failed(exc, port, timeout_s)
        raise
    return Result(cfg["thing"], cfg["store"]["kind"], report.cert_id, report.not_after,
                  report.issuer_check, list(report.warnings), time.monotonic() - started)


def _check_partition(b, label, size):
    """Before any write: the board's partition table has a data partition `label` whose half
    (one credential record, store_part.py) holds the record header, certificate and key.
    Code sent inline, not a device call (Board.call): it runs before the package is installed."""
    found = b.exec(
        f"""
        try:
            import esp32
        except ImportError:
            print('no-esp32')
        else:
            p = esp32.Partition.find(esp32.Partition.TYPE_DATA, label={label!r})
            print(*((p[0].ioctl(4, 0), p[0].ioctl(5, 0)) if p else '-'))
        """
    ).split()
    if found == ["no-esp32"]:
        raise UpcertError("store partition needs an ESP32 (MicroPython's esp32 module): this "
                          "board has none; use store fs")
    if found == ["-"]:
        raise UpcertError(
            f"the board has no data partition labelled {label!r}, so store partition cannot be "
            f"used: flash the partition table {_TABLE} (see its header; on an emulated board: "
            f"`upcert board run --partitions {_TABLE}`), or use store fs or nvs")
    blocks, block_size = (int(n) for n in found)
    room = blocks // 2 * block_size - _RECORD_HEADER
    if size > room:
        raise UpcertError(
            f"certificate and key take {size} bytes, but a record of partition {label!r} holds "
            f"{room}: make the partition bigger in {_TABLE}, or use a smaller (EC) key")


def status(port, timeout_s=10, resume=True, deadline_s=60, boot_wait_s=0):
    """What the board holds: thing, store, certificate id and expiry, as the device reads them
    (hostcalls.status). Reading interrupts main.py (Ctrl-C); resume=True soft-reboots the board
    afterwards. boot_wait_s: the board has just rebooted (Board.open)."""
    b = Board(port, timeout_s=timeout_s, deadline_s=deadline_s, operation="board status")
    b.open(boot_wait_s)
    try:
        st = b.call("hostcalls.status", CONFIG_PATH, what="reading what it holds")
        if resume:
            b.soft_reboot()
    finally:
        b.close()
    if not isinstance(st, dict):
        raise UpcertError(f"board status gave no answer: {st!r:.200}")
    return st


# A certificate and key of this size fit every store (the room check before anything is written):
# AWS-issued certificates are ~1.2 KB DER (RSA-signed), a P-256 key in PKCS#8 ~140 bytes.
_ROOM_CERT, _ROOM_KEY = 2048, 200


def provision_csr(port, cfg, roots, issue, *, board="esp32_generic", install=True, reset=True,
                  log=print, timeout_s=10, deadline_s=DEADLINE_S, stored=None):
    """Provision with a key made on the board: firmware, config and roots written as
    provision() does, then the board makes a P-256 key (kept on its flash, pending) and a CSR
    (hostcalls.new_key_csr); issue(csr) -> (certificate, issuer check text) gets the
    certificate (`csr`: cryptography's, its signature checked here); the board checks that the
    certificate is for its pending key, writes the pair through its store and removes the
    pending key (hostcalls.store_pending); read back, loaded into tls. stored(certificate), if
    given, runs once the board holds the identity, before the reset. The key never leaves the
    board. An issue() that raises leaves the board's store as it was."""
    from upcert.validate import check_config; check_config(cfg)  # noqa: E702, I001 (validate.py)
    from cryptography import x509  # noqa: I001

    started = time.monotonic()
    kind = cfg["store"]["kind"]
    roots_der = b"".join(certs.cert_to_der(r) for r in roots)
    config_bytes = json.dumps(cfg, separators=(",", ":")).encode()
    with Board(port, timeout_s=timeout_s, deadline_s=deadline_s, operation="provision") as b:
        info = b.probe(firmware.probe_modules(kind))
        firmware.check_board(info, kind)
        if kind == "partition":
            _check_partition(b, cfg["store"].get("label", PARTITION_LABEL), _ROOM_CERT + _ROOM_KEY)
        mine = [(CONFIG_PATH, config_bytes), (ROOTS_PATH, roots_der)]
        room = _store_room(kind, bytes(_ROOM_CERT), bytes(_ROOM_KEY))
        p = firmware.plan(b, info, board, extra=mine + room, files_wanted=install)
        if install:
            firmware.install(b, board=board, log=log, info=info, planned=p)
        else:
            firmware.check_room(info, p.extra, p.have)
        for path, data in mine:
            if (path, data) in p.extra:
                _write_checked(b, path, data)
        b.call("hostcalls.discard_pending", what="removing a key a cut-short provisioning left")
        csr_der = b.call("hostcalls.new_key_csr", [["CN", cfg["thing"]]],
                         what="making the key and the CSR on the board")
        try:
            csr = x509.load_der_x509_csr(bytes(csr_der))
        except ValueError as e:
            raise UpcertError(f"the board's CSR cannot be read ({e})") from None
        if not csr.is_signature_valid:
            raise UpcertError("the board's CSR does not verify: its signature is bad")
        try:
            cert, issuer_check = issue(csr)
        except BaseException:
            # refused (or failed) before anything was written: the pending key goes too
            b.call("hostcalls.discard_pending", what="removing the key of a refused certificate")
            raise
        cert_der = certs.cert_to_der(cert)
        b.call("hostcalls.store_pending", cert_der, CONFIG_PATH, what="storing the identity")
        back = b.call("hostcalls.credential_digests", CONFIG_PATH,
                      what="reading the credentials back")
        if back[0] != _sha(cert_der):
            raise UpcertError(f"the certificate in the {kind} store does not read back as written")
        b.call("hostcalls.load_tls", CONFIG_PATH, ROOTS_PATH,
               what="loading the credentials into tls")
        if stored is not None:
            stored(cert)
        if reset:
            b.hard_reset()
    return Result(cfg["thing"], kind, certs.cert_id(cert), cert.not_valid_after_utc,
                  issuer_check, [], time.monotonic() - started)


CLAIM_CERT_PATH = "/upcert.d/claim.der"  # firmware/upcert/claim.py reads them
CLAIM_KEY_PATH = "/upcert.d/claim.key"


def provision_claim(port, cfg, cert, key, roots, *, board="esp32_generic", install=True,
                    reset=True, log=print, timeout_s=10, deadline_s=DEADLINE_S, prepare=None):
    """Provisioning by claim (AWS IoT developer guide, "Provisioning by claim"): write a batch's
    claim certificate and key, the trust anchors and cfg (with "claim": {"template", ...})
    instead of an identity. At its first boot the board makes its own key (in its store; in the
    chip for atecc608) and gets its certificate through the claim template; then it erases the
    claim (firmware/upcert/claim.py). Refuses a board that already holds an identity: the claim
    would never be used there. prepare(board session), if given, runs after the firmware is
    installed and before the claim is written (atecc608: chip.claim_preparer). Returns Result
    for the claim certificate."""
    from upcert.validate import check_config; check_config(cfg)  # noqa: E702, I001 (validate.py)
    if not isinstance(cfg.get("claim"), dict):
        raise UpcertError("the config has no 'claim': build it with make_config(..., "
                          "extra={'claim': {'template': ...}})")
    started = time.monotonic()
    # the pair must match; its issuer is the account's (AWS) or the local CA, not a server root
    report = certs.check_device_credentials(cert, key, None)
    cert_der, key_der = certs.cert_to_der(cert), certs.key_to_der(key)
    files = [(ROOTS_PATH, b"".join(certs.cert_to_der(r) for r in roots)),
             (CLAIM_KEY_PATH, key_der), (CLAIM_CERT_PATH, cert_der),
             (CONFIG_PATH, json.dumps(cfg, separators=(",", ":")).encode())]  # config last
    kind = cfg["store"]["kind"]
    with Board(port, timeout_s=timeout_s, deadline_s=deadline_s, operation="provision") as b:
        info = b.probe(firmware.probe_modules(kind))
        firmware.check_board(info, kind)
        p = firmware.plan(b, info, board, extra=files, files_wanted=install)
        if install:
            firmware.install(b, board=board, log=log, info=info, planned=p)
        else:
            firmware.check_room(info, p.extra, p.have)
        held = b.call("hostcalls.status", CONFIG_PATH, what="asking what the board holds")
        if held.get("cert_id"):
            raise UpcertError(
                f"the board on {port} already holds certificate {held['cert_id'][:16]} for "
                f"{held.get('thing')!r}: a claim is for a board without an identity (it would "
                "never be used here); rotate that identity instead, or erase the board first")
        if prepare is not None:
            prepare(b)
        for path, data in files:
            if (path, data) in p.extra:
                _write_checked(b, path, data)
        if reset:
            b.hard_reset()
    return Result(cfg["thing"], kind, report.cert_id, report.not_after, "claim",
                  list(report.warnings), time.monotonic() - started)
