"""Provisioning an ATECC608 through the board (store "atecc608"): configure and lock a blank chip
(only with lock=True), make the key inside it, have it sign the CSR on the board, get the
certificate from the local CA, store it; and rotation to a spare key slot. The board runs the
steps of its own module upcert.hostcalls_atecc (Board.call); every signature the chip makes is
checked here with `cryptography`.
"""

import hashlib
import json
import os
import time
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from upcert.board import firmware
from upcert.board.provision import CONFIG_PATH, DEADLINE_S, ROOTS_PATH, Registration, make_config
from upcert.board.transport import Board, BoardError, BoardReset, BoardTimeout
from upcert.errors import UpcertError
from upcert.pki import certs
from upcert.pki.ca import LocalCa

# upcert's own configuration of a blank chip (contract "upcert configuration"; ATECC608
# datasheet Table 2-5, §2.2.5): slot 0 device key and slots 2-4 spare keys for rotation, each
# SlotConfig 0x2087 (external + internal sign, ECDH, IsSecret, GenKey allowed) and KeyConfig
# 0x0033 (Private, PubInfo, P-256, Lockable); every other slot clear data (0x0000 / 0x003C),
# slot 8 (416 bytes) the certificate when store "cert" is "slot8".
KEY_SLOTS = (0, 2, 3, 4)
SLOT_CONFIG = [0x2087 if n in KEY_SLOTS else 0x0000 for n in range(16)]
KEY_CONFIG = [0x0033 if n in KEY_SLOTS else 0x003C for n in range(16)]
CERT_SLOT8_MAX = 416
UNLOCKED = 0x55  # LockConfig / LockValue while the zone is unlocked (Table 2-5 bytes 86-87)


class ChipError(UpcertError):
    """The chip cannot be provisioned as asked; the message says why and what to do."""


# Board-side steps: functions of firmware/upcert/hostcalls_atecc.py, called by name with JSON-like
# arguments (Board.call); each answers a dict, bytes as hex.
STEPS = ("probe", "configure", "lock_config", "lock_data", "key", "store_write", "verify",
         "new_key", "stage")
_WHAT = {"probe": "reading the chip", "configure": "writing the chip's configuration",
         "lock_config": "locking the config zone", "lock_data": "locking the data zone",
         "key": "making the key and the CSR on the chip", "store_write": "storing the identity",
         "verify": "checking the stored identity", "new_key": "making a new key in a spare slot",
         "stage": "staging the new identity"}
_STEP_TIMEOUT_S = 60  # between characters of a step's answer: a GenKey, a CSR signed on the chip


def run(b, step, **args):
    """Run board-side step `step` (hostcalls_atecc.<step>, one of STEPS) with keyword
    arguments; its answer. ChipError naming the step when it fails on the board (a deadline
    passed or a reboot stays a BoardTimeout/BoardReset, which names it)."""
    what = _WHAT[step]
    try:
        return b.call(f"hostcalls_atecc.{step}", what=what, timeout_s=_STEP_TIMEOUT_S, **args)
    except (BoardTimeout, BoardReset):
        raise
    except BoardError as e:
        raise ChipError(str(e)) from None


# The same steps as code for run_code (with A = the arguments): for scripts that wrap each step
# in a prelude of their own (tests/host/test_powercut_atecc.py counts flash writes per step).
CODE = {step: f"from upcert import hostcalls_atecc\nout = hostcalls_atecc.{step}(**A)"
        for step in STEPS}

# run_code: any code, with helpers, for tests and investigations on a board (provisioning uses
# run()). The raw REPL keeps what main.py and earlier code loaded: the code starts and ends by
# dropping the device package's modules and its own globals, or a 110 KB heap runs out.
_DROP = """
for _m in [m for m in sys.modules if m.startswith('upcert') or m == 'board']:
    sys.modules.pop(_m)
for _k in [k for k in globals() if k not in _G]:
    globals().pop(_k)
gc.collect()
"""
_PRELUDE = """
import sys, gc
_G = set(globals()) - {'app', 'board'} | {'_G', '_m', '_k'}
""" + _DROP + """
import sys, gc, json, binascii, hashlib, board
A = json.loads(%r)
h = lambda b: binascii.hexlify(b).decode()
u = binascii.unhexlify
chip = lambda: board.atecc(A['store'])
def store():
    from upcert import config
    return board.store(config.load(A['config_path']))
"""
_EPILOGUE = """
print(json.dumps(out))
""" + _DROP


def run_code(b, code, what, **args):
    """Run MicroPython `code` on the board (Board b) with A = args, chip(), store(), h(), u();
    it sets `out`, returned as JSON. ChipError naming `what` when it fails on the board (a
    deadline passed or a reboot stays a BoardTimeout/BoardReset, which names it)."""
    try:
        text = b.exec(_PRELUDE % json.dumps(args) + code + _EPILOGUE,
                      timeout_s=_STEP_TIMEOUT_S, what=what)
    except (BoardTimeout, BoardReset):
        raise
    except BoardError as e:
        raise ChipError(str(e)) from None
    try:
        return json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ChipError(f"{what}: the board gave no answer ({text.strip()[:200]})") from None


@dataclass
class ChipResult:
    thing: str
    cert_id: str
    not_after: object
    issuer_check: str
    serial: str
    revision: str
    slot: int
    configured: bool  # True when upcert's layout was written (a blank chip)
    config_locked: bool
    data_locked: bool
    seconds: float
    certificate: object = None  # cryptography x509.Certificate, for the registry
    warnings: list = field(default_factory=list)
    store: str = "atecc608"


def make_chip_config(thing, endpoint, *, address=0x60, slot=0, cert="fs", extra=None,
                     wifi=None):
    """config.json (provision.make_config) with store atecc608: the chip's 7-bit address, the
    device key slot, spare key slots for rotation (2-4) and where the certificate lives."""
    if not isinstance(address, int) or not 0x08 <= address <= 0x77:
        shown = hex(address) if isinstance(address, int) else repr(address)
        raise ChipError(f"chip address {shown}: give the 7-bit I2C address 0x08..0x77 "
                        "(0x60 blank, 0x35 Trust&Go, 0x36 TrustFLEX; 0xC0 is 0x60's 8-bit form)")
    if not isinstance(slot, int) or not 0 <= slot <= 15:
        raise ChipError(f"key slot {slot!r}: 0..15 (0 is the device key in upcert's layout)")
    if cert not in ("fs", "slot8"):
        raise ChipError(f"certificate location {cert!r}: fs or slot8")
    cfg = make_config(thing, endpoint, "fs", extra, wifi)
    cfg["store"] = {"kind": "atecc608", "address": address, "slot": slot,
                    "spares": [n for n in (2, 3, 4) if n != slot], "cert": cert}
    return cfg


def layout_bytes(words):
    """Little-endian u16 words as bytes (the SlotConfig/KeyConfig arrays)."""
    return b"".join(w.to_bytes(2, "little") for w in words)


def decode_config(config):
    """Readable view of the 128-byte config zone (datasheet Table 2-5)."""
    if len(config) != 128:
        raise ChipError(f"the chip's config zone read {len(config)} bytes, want 128")
    slot_locked = int.from_bytes(config[88:90], "little")  # bit n = 0: slot n locked
    slots = {}
    for n in range(16):
        sc = int.from_bytes(config[20 + 2 * n:22 + 2 * n], "little")
        kc = int.from_bytes(config[96 + 2 * n:98 + 2 * n], "little")
        slots[n] = {"slot_config": sc, "key_config": kc, "private": bool(kc & 1),
                    "p256": (kc >> 2) & 7 == 4, "ext_sign": bool(sc & 1),
                    "genkey": bool(sc & 0x2000), "locked": not (slot_locked >> n) & 1}
    return {"serial": (config[0:4] + config[8:13]).hex(), "address": config[16] >> 1,
            "config_locked": config[87] != UNLOCKED, "data_locked": config[86] != UNLOCKED,
            "slots": slots}


def explain_lock(addr, serial):
    """Why a blank chip is not provisioned without lock=True (and what locking means)."""
    return (
        f"the ATECC608 at 0x{addr:02x} (serial {serial}) is blank: its configuration zone is "
        "not locked, and the chip generates a key only after that zone is locked. Provisioning "
        "it writes upcert's slot layout (slot 0 device key, slots 2-4 spare keys for rotation, "
        "slot 8 data), locks the configuration zone, makes the key inside the chip and, once the "
        "certificate is stored, locks the data zone. Locking is permanent: a locked zone can "
        "never be changed or unlocked again, on any ATECC608. Nothing was written. Run again "
        "with --lock to go ahead. (On an emulated board the chip is the file "
        "<state>/atecc608.json: stop the board and delete that file for a blank chip again.)"
    )


def _key_slot_problem(info, slot, need_genkey):
    s = info["slots"][slot]
    if not (s["private"] and s["p256"] and s["ext_sign"]):
        return (f"slot {slot} is not a P-256 private-key slot that signs external digests "
                f"(SlotConfig 0x{s['slot_config']:04x}, KeyConfig 0x{s['key_config']:04x})")
    if need_genkey and (not s["genkey"] or s["locked"]):
        return (f"slot {slot} holds no key yet and GenKey is not allowed there (SlotConfig "
                f"0x{s['slot_config']:04x}{', slot locked' if s['locked'] else ''})")
    return None


def check_csr(csr_der, pub64):
    """The CSR (DER) parsed; ChipError unless its signature verifies and its key is pub64."""
    req = x509.load_der_x509_csr(csr_der)
    if not req.is_signature_valid:
        raise ChipError("the CSR the chip signed does not verify: the chip's signature is bad")
    point = req.public_key().public_bytes(*_POINT)
    if point != b"\x04" + pub64:
        raise ChipError("the CSR's public key is not the key in the chip's slot")
    return req


_POINT = (serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def verify_digest(point65, digest, r, s):
    """True when (r, s) is a valid ECDSA P-256 signature of the 32-byte digest."""
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point65)
    try:
        pub.verify(encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True


def _issue(ca, thing, req, days):
    cert = ca.issue_device(thing, req.public_key(), days=days)
    try:
        cert.verify_directly_issued_by(ca.certificate)
        check = "verified"
    except (InvalidSignature, ValueError, TypeError) as e:
        raise ChipError(f"the local CA's certificate does not verify ({e})") from None
    return cert, check


def _fits(where, cert_der):
    if where == "slot8" and len(cert_der) > CERT_SLOT8_MAX:
        raise ChipError(f"the certificate is {len(cert_der)} bytes; data slot 8 holds "
                        f"{CERT_SLOT8_MAX}: use --chip-cert fs (slot 8 takes only small "
                        "certificates: a P-256 issuer, short names, few extensions)")


def _check_store_readback(b, cert_der, point65):
    # The store on the board: same certificate, the chip's key, and a fresh signature.
    digest = hashlib.sha256(os.urandom(32)).digest()
    back = run(b, "verify", config_path=CONFIG_PATH, digest=digest.hex())
    if back["cert"] != hashlib.sha256(cert_der).hexdigest():
        raise ChipError("the certificate does not read back from the atecc608 store as written")
    if bytes.fromhex(back["point"]) != point65:
        raise ChipError("the store's signer is not the key the certificate was issued for")
    if not verify_digest(point65, digest, int(back["r"], 16), int(back["s"], 16)):
        raise ChipError("a signature made through the store does not verify")
    if not back["no_key"]:
        raise ChipError("the atecc608 store handed out private key bytes: refusing")
    return back


def local_ca_issuer(ca_dir, days=365):
    """An issuer for provision_chip: the local CA signs the chip's CSR."""
    ca = LocalCa.load(ca_dir)

    def issue(thing, req):
        return _issue(ca, thing, req, days)

    # A dry run of the CA with the same thing name and validity, so bad input (or a certificate
    # too big for slot 8) stops us before anything is written to the chip.
    issue.dry_run = lambda thing: ca.issue_device(
        thing, ec.generate_private_key(ec.SECP256R1()).public_key(), days)
    issue.roots = [ca.certificate]
    return issue


def provision_chip(port, cfg, ca_dir=None, *, lock=False, board="esp32_generic", install=True,
                   reset=True, days=365, log=print, timeout_s=10, deadline_s=DEADLINE_S,
                   registry=None, issue=None, roots=None, stored=None):
    """Provision the chip named by cfg['store'] (kind atecc608: address, slot, cert) and write
    cfg as the board's config. A blank chip needs lock=True (ChipError explaining locking
    otherwise, before anything is written to the chip or the store). The board is asked what
    it runs before anything is written (firmware.check_board); deadline_s and registry as in
    provision.provision (the certificate is registered before it is stored on the board).
    issue(thing, csr) -> (certificate, issuer check text) gets the certificate for the chip's
    CSR (checked: signature and the slot's key); default: the local CA in ca_dir
    (local_ca_issuer), whose certificate is then the trust anchor; another issuer comes with
    roots (cryptography certificates for roots.der). stored(certificate), if given, is called
    once the board holds the identity, before the reset."""
    started = time.monotonic()
    st = cfg["store"]
    slot, where = st.get("slot", 0), st.get("cert", "fs")
    if issue is None:
        issue = local_ca_issuer(ca_dir, days)
        _fits(where, certs.cert_to_der(issue.dry_run(cfg["thing"])))
        roots = issue.roots
    roots_der = b"".join(certs.cert_to_der(r) for r in roots)
    config_bytes = json.dumps(cfg, separators=(",", ":")).encode()
    reg = Registration(registry, None, cfg["thing"])
    try:
        with Board(port, timeout_s=timeout_s, deadline_s=deadline_s,
                   operation="provision (atecc608)") as b:
            return _provision_chip(b, cfg, issue, st, slot, where, roots_der, config_bytes, reg,
                                   lock=lock, board=board, install=install, reset=reset,
                                   log=log, started=started, stored=stored)
    except Exception as exc:
        reg.failed(exc, port, timeout_s)
        raise


def _configured(b, st, lock, log):
    """(decoded config zone, configured now): a blank chip (config zone unlocked) gets
    upcert's slot layout, read back, and its config zone locked when lock; without lock,
    ChipError explaining locking before anything is written."""
    probe = run(b, "probe", store=st)
    info = decode_config(bytes.fromhex(probe["config"]))
    if probe["serial"] != info["serial"]:
        raise ChipError(f"serial {probe['serial']} from the chip differs from its config "
                        f"zone ({info['serial']}): the bus is unreliable, check the wiring")
    addr = st.get("address", 0x60)
    configured = False
    if not info["config_locked"]:
        if not lock:
            raise ChipError(explain_lock(addr, info["serial"]))
        log(f"chip {info['serial']}: writing upcert's slot layout, locking the config zone")
        back = run(b, "configure", store=st, slot_config=layout_bytes(SLOT_CONFIG).hex(),
                   key_config=layout_bytes(KEY_CONFIG).hex())
        info = decode_config(bytes.fromhex(back["config"]))
        for n in range(16):
            got = info["slots"][n]
            if (got["slot_config"], got["key_config"]) != (SLOT_CONFIG[n], KEY_CONFIG[n]):
                raise ChipError(f"slot {n} configuration does not read back as written")
        run(b, "lock_config", store=st)
        info["config_locked"] = configured = True
    return info, configured


def claim_preparer(st, lock, log=print):
    """For provision.provision_claim(prepare=...) with store atecc608: before the claim is
    written, a blank chip gets upcert's slot layout and both zones locked (lock=True, or
    ChipError explaining locking); the board's first boot then makes its key with GenKey in a
    key slot its config allows (AteccStore.new_key), and the CSR is signed by the chip."""

    def prepare(b):
        info, _ = _configured(b, st, lock, log)
        spares = [n for n in (*st.get("spares", (2, 3, 4)), st.get("slot", 0))
                  if not _key_slot_problem(info, n, True)]
        if not spares:
            raise ChipError(f"chip {info['serial']}: no key slot where GenKey is allowed for "
                            "the claim's key: check the chip's slot configuration")
        if not info["data_locked"]:
            if not lock:
                raise ChipError(explain_lock(st.get("address", 0x60), info["serial"]))
            log(f"chip {info['serial']}: locking the data zone (the board makes its key at "
                "first boot)")
            run(b, "lock_data", store=st)

    return prepare


def _provision_chip(b, cfg, issue, st, slot, where, roots_der, config_bytes, reg, *, lock,
                    board, install, reset, log, started, stored):
    fw = b.probe(firmware.probe_modules("atecc608"))
    firmware.check_board(fw, "atecc608")
    mine = [(CONFIG_PATH, config_bytes), (ROOTS_PATH, roots_der)]
    p = firmware.plan(b, fw, board, extra=mine, files_wanted=install)
    if install:
        firmware.install(b, board=board, log=log, info=fw, planned=p)
    else:
        firmware.check_room(fw, p.extra, p.have)
    info, configured = _configured(b, st, lock, log)
    gen = not info["data_locked"]
    problem = _key_slot_problem(info, slot, gen)
    if problem:
        raise ChipError(f"chip {info['serial']}: {problem}: choose another --slot")
    log(f"chip {info['serial']}: {'new key in' if gen else 'reading the key of'} slot {slot}")
    k = run(b, "key", store=st, slot=slot, gen=gen, subject=[["CN", cfg["thing"]]])
    pub = bytes.fromhex(k["pub"])
    if bytes.fromhex(k["pub_again"]) != pub:
        raise ChipError(f"slot {slot}'s public key (GenKey mode 0) differs from the new key")
    req = check_csr(bytes.fromhex(k["csr"]), pub)
    cert, issuer_check = issue(cfg["thing"], req)
    if cert.public_key().public_bytes(*_POINT) != b"\x04" + pub:
        raise ChipError("the certificate issued for the chip's CSR is for another key: refused")
    cert_der = certs.cert_to_der(cert)
    _fits(where, cert_der)
    b.sync_file(CONFIG_PATH, config_bytes)
    b.sync_file(ROOTS_PATH, roots_der)
    reg.use(cert)
    reg.register()  # before the board is told to use the certificate
    run(b, "store_write", config_path=CONFIG_PATH, cert=cert_der.hex(), slot=slot)
    warnings = []
    if lock and not info["data_locked"]:
        log(f"chip {info['serial']}: locking the data zone")
        run(b, "lock_data", store=st)
        info["data_locked"] = True
    elif not info["data_locked"]:
        warnings.append("the chip's data zone stays unlocked (run again with --lock to lock "
                        "it): until then its slots can be rewritten")
    back = _check_store_readback(b, cert_der, b"\x04" + pub)
    if stored is not None:
        stored(cert)
    if reset:
        b.hard_reset()
    return ChipResult(cfg["thing"], certs.cert_id(cert), cert.not_valid_after_utc, issuer_check,
                      info["serial"], back["describe"].get("revision", "?"), slot, configured,
                      info["config_locked"], info["data_locked"], time.monotonic() - started,
                      cert, warnings)


@dataclass
class RotateResult:
    thing: str
    old_slot: int
    new_slot: int
    cert_id: str
    committed: bool
    certificate: object


def rotate_chip(port, ca_dir, *, days=365, commit=True, reset=True, log=print, timeout_s=10,
                deadline_s=DEADLINE_S, registry=None):
    """Rotation without AWS: a new key in a spare key slot, CSR signed by the chip, certificate
    from the local CA, stage, and (commit=True) commit. The old key slot is untouched.
    deadline_s and registry as in provision.provision (registered before it is staged)."""
    ca = LocalCa.load(ca_dir)
    reg = Registration(registry, None, None)
    try:
        with Board(port, timeout_s=timeout_s, deadline_s=deadline_s,
                   operation="chip rotate") as b:
            return _rotate_chip(b, ca, reg, days=days, commit=commit, reset=reset, log=log)
    except Exception as exc:
        reg.failed(exc, port, timeout_s)
        raise


def _rotate_chip(b, ca, reg, *, days, commit, reset, log):
    k = run(b, "new_key", config_path=CONFIG_PATH)
    log(f"new key in slot {k['slot']} (active: slot {k['old']})")
    req = check_csr(bytes.fromhex(k["csr"]), bytes.fromhex(k["pub"]))
    cert, _ = _issue(ca, k["thing"], req, days)
    cert_der = certs.cert_to_der(cert)
    reg.use(cert, k["thing"])
    reg.register()  # before the board is told to use the certificate
    s = run(b, "stage", config_path=CONFIG_PATH, cert=cert_der.hex(), ref=k["ref"],
            old=k["old"], commit=commit)
    if not s["staged"]:
        raise ChipError("the new identity does not read back from the idle slot A/B")
    if s["old_pub"] != k["old_pub"]:
        raise ChipError(f"the public key of the old slot {k['old']} changed during rotation")
    if commit:
        if s["slot"] != k["slot"]:
            raise ChipError(f"after commit the store uses slot {s['slot']}, not {k['slot']}")
        _check_store_readback(b, cert_der, b"\x04" + bytes.fromhex(k["pub"]))
    if reset:
        b.hard_reset()
    return RotateResult(k["thing"], k["old"], k["slot"], certs.cert_id(cert), commit, cert)


