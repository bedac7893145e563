"""Provisioning one board: check the credentials, install the firmware, write config and
credentials through the board's own store code, read back, test-load into tls, report.

Nothing is written to the board before every host-side check has passed.
"""

import hashlib
import json
import time
from dataclasses import dataclass

from . import certs, firmware
from .errors import UpcertError
from .transport import Board

STORES = ("fs", "nvs", "partition")
CONFIG_PATH = "/upcert.d/config.json"
ROOTS_PATH = "/upcert.d/roots.der"
PARTITION_LABEL = "upcert"  # boards/esp32_generic/partitions.csv
_RECORD_HEADER = 64  # bytes before cert + key in a partition record (store_part.py _DATA)
_TABLE = "boards/esp32_generic/partitions.csv"


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
    ca = certs.LocalCa.load(ca_dir)
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


def provision(port, cfg, cert, key, roots, *, board="esp32_generic", install=True,
              reset=True, log=print, timeout_s=10):
    """Check, write, verify. Returns Result; raises UpcertError before any write on bad input."""
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

    with Board(port, timeout_s=timeout_s) as b:
        if cfg["store"]["kind"] == "partition":
            _check_partition(b, cfg["store"].get("label", PARTITION_LABEL),
                             len(cert_der) + len(key_der))
        if install:
            firmware.install(b, board=board, log=log)
        b.sync_file(CONFIG_PATH, config_bytes)
        b.sync_file(ROOTS_PATH, roots_der)
        # Credentials go through the device's own store code, so host and device agree on layout.
        b.exec(
            f"""
            import board, json
            from upcert import config
            cfg = config.load({CONFIG_PATH!r})
            board.store(cfg).write({cert_der!r}, {key_der!r})
            """
        )
        back = b.exec(
            f"""
            import board, hashlib, binascii
            from upcert import config
            s = board.store(config.load({CONFIG_PATH!r}))
            h = lambda d: binascii.hexlify(hashlib.sha256(d).digest()).decode()
            print(h(s.certificate()), h(s.private_key()))
            """
        ).split()
        if back != [_sha(cert_der), _sha(key_der)]:
            raise UpcertError(
                f"credentials in the {cfg['store']['kind']} store do not read back as written"
            )
        loaded = b.exec(
            f"""
            import board, tls
            from upcert import config, store
            s = board.store(config.load({CONFIG_PATH!r}))
            ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
            ctx.load_cert_chain(s.certificate(), s.private_key())
            for r in store.load_roots({ROOTS_PATH!r}):
                ctx.load_verify_locations(r)
            print('loaded')
            """
        ).strip()
        if loaded != "loaded":
            raise UpcertError(f"the board could not load the credentials into tls: {loaded}")
        if reset:
            b.hard_reset()
    return Result(cfg["thing"], cfg["store"]["kind"], report.cert_id, report.not_after,
                  report.issuer_check, list(report.warnings), time.monotonic() - started)


def _check_partition(b, label, size):
    """Before any write: the board's partition table has a data partition `label` whose half
    (one credential record, store_part.py) holds the record header, certificate and key."""
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


STATUS_CODE = """
import json, time, board
from upcert import config, x509
out = {}
try:
    cfg = config.load('/upcert.d/config.json')
    out['thing'] = cfg['thing']
    out['endpoint'] = '%s:%d' % (cfg['endpoint'], cfg['port'])
    s = board.store(cfg)
    out['store'] = s.describe()
    c = x509.Certificate(s.certificate())
    out['cert_id'] = c.cert_id()
    t = c.not_after_tuple
    out['not_after'] = '%04d-%02d-%02dT%02d:%02d:%02dZ' % t
    out['days_left'] = round(c.days_left(time.time()), 1)
    out['subject_cn'] = c.subject_cn
except Exception as e:
    out['error'] = '%s: %s' % (type(e).__name__, e)
out['board'] = board.NAME
print(json.dumps(out))
"""


def status(port, timeout_s=10, resume=True):
    """What the board holds: thing, store, certificate id and expiry (read by the device).
    Reading interrupts main.py (Ctrl-C); resume=True soft-reboots the board afterwards."""
    with Board(port, timeout_s=timeout_s) as b:
        out = b.exec(STATUS_CODE)
        if resume:
            b.soft_reboot()
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise UpcertError(f"board status gave no answer: {out.strip()[:200]}") from None
