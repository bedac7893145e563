"""The ATECC608 driver (upcert.atecc, run by the MicroPython unix port through the emulated
board's machine.I2C and emu_i2c) against the independently written emulator (upcert.emu.atecc
behind upcert.emu.i2c_bridge). Every signature and ECDH result is checked with pyca/cryptography,
a chip-signed CSR also with `openssl req -verify`; lock and permission rules; bus faults."""

import hashlib
import json
import os
import subprocess
import threading
import time

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from upcert.emu.atecc import Atecc608
from upcert.emu.i2c_bridge import serve

from tests.tools import ROOT, micropython_cmd, require, wait_until

PRELUDE = """
import json, time, emu_i2c, emu_machine
from binascii import hexlify, unhexlify
from upcert.atecc import ATECC, Signer
from upcert.errors import AteccError
emu_i2c.connect(%r)
out = {}
def h(b):
    return hexlify(b).decode()
def err(fn, *args):
    try:
        fn(*args)
    except AteccError as e:
        return [e.status, str(e)]
    return None
"""
DIGESTS = [hashlib.sha256(b"message %d" % i).digest() for i in range(5)]
SHA_LENGTHS = (0, 1, 55, 63, 64, 65, 130, 1024)
# The layout `upcert provision --store atecc608` writes (issue 4 contract): key slots 0, 2-4
# SlotConfig 0x2087 KeyConfig 0x0033; data slots 0x0000/0x003C. Slot 9 is made write-never
# (WriteConfig 0b1000) here to check that a write after the data lock is refused.
SLOT_CONFIG = [0x2087 if n in (0, 2, 3, 4) else 0x8000 if n == 9 else 0 for n in range(16)]
KEY_CONFIG = [0x0033 if n in (0, 2, 3, 4) else 0x003C for n in range(16)]


def _le(words):
    return b"".join(w.to_bytes(2, "little") for w in words)


@pytest.fixture
def bus(tmp_path):
    """A bridge with a blank chip (0x60) and a Trust&Go-style chip (0x35) on it."""
    require("micropython")
    chips = {"blank": Atecc608.open(tmp_path / "blank.json", "blank"),
             "tng": Atecc608.open(tmp_path / "tng.json", "tng")}
    sock = tmp_path / "i2c.sock"
    bridge = serve(sock, chips.values())
    try:
        yield sock, chips
    finally:
        bridge.close()


def run(sock, body, timeout=300):
    """Run PRELUDE + body on the unix port; the script fills `out`; returns it."""
    script = sock.parent / "script.py"
    script.write_text(PRELUDE % str(sock) + body + "\nprint('OUT' + json.dumps(out))\n")
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(
        [str(ROOT / "boards" / "unix" / "emu"), str(ROOT / "firmware")]))
    proc = subprocess.run(micropython_cmd() + [str(script)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("OUT")][-1]
    return json.loads(line[3:])


def public(xy_hex):
    xy = bytes.fromhex(xy_hex)
    assert len(xy) == 64
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xy)


def verify(pub, digest, sig_hex):
    sig = bytes.fromhex(sig_hex)
    assert len(sig) == 64
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def xy(key):
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]


def test_blank_chip_configure_lock_keys_sign_ecdh_csr(bus, tmp_path):
    sock, _ = bus
    peer = ec.generate_private_key(ec.SECP256R1())
    body = f"""
c = ATECC(emu_machine.I2C(0, freq=100000), 0x60, wake_freq=100000)
out["info"] = h(c.info())
out["before"] = c.describe()
out["genkey_unlocked"] = err(c.genkey, 0)
c.write_config(20, unhexlify({_le(SLOT_CONFIG).hex()!r}))
c.write_config(96, unhexlify({_le(KEY_CONFIG).hex()!r}))
cfg = c.read_config()
out["slots"] = h(cfg[20:52])
out["keys"] = h(cfg[96:128])
c.lock_config(confirm="LOCK")
out["locked1"] = c.locked()
out["write_after_lock"] = err(c.write_config, 20, bytes(4))
out["pub0"] = h(c.genkey(0))
out["pub2"] = h(c.genkey(2))
out["pub0_again"] = h(c.public_key(0))
out["sigs"] = [h(c.sign_digest(0, unhexlify(d))) for d in {[d.hex() for d in DIGESTS]!r}]
out["sig2"] = h(c.sign_digest(2, unhexlify({DIGESTS[0].hex()!r})))
sig = c.sign_digest(0, unhexlify({DIGESTS[1].hex()!r}))
pub0 = unhexlify(out["pub0"])
out["verify_ok"] = c.verify_extern(unhexlify({DIGESTS[1].hex()!r}), sig, pub0)
out["verify_bad"] = c.verify_extern(unhexlify({DIGESTS[2].hex()!r}), sig, pub0)
peer = unhexlify({xy(peer).hex()!r})
out["ecdh"] = h(c.ecdh(0, peer))
eph, secret = c.ecdh_ephemeral(peer)
out["eph"], out["eph_secret"] = h(eph), h(secret)
out["sha"] = [h(c.sha256(bytes(i & 0xFF for i in range(n)))) for n in {SHA_LENGTHS!r}]
out["random"] = [h(c.random()), h(c.random())]
c.write(2, 8, 0, 0, b"A" * 32)
c.write(2, 8, 12, 0, b"Z" * 32)
c.write(2, 9, 0, 0, b"w" * 32)
out["read_unlocked"] = err(c.read, 2, 8, 0, 0, 32)
out["read_private"] = err(c.read, 2, 0, 0, 0, 32)
out["genkey_data_slot"] = err(c.genkey, 8)
from upcert import csr
out["csr"] = h(csr.build(Signer(c, 0), [("CN", "dev1"), ("O", "upcert")]))
out["wrong_crc"] = err(c.lock_data, "LOCK", 0x1234)
out["locked_wrong_crc"] = c.locked()
c.lock_data(confirm="LOCK")
out["locked2"] = c.locked()
out["slot8"] = h(c.read(2, 8, 0, 0, 32) + c.read(2, 8, 12, 0, 32))
out["slot9"] = h(c.read(2, 9, 0, 1))
out["write4_locked"] = err(c.write, 2, 8, 2, 3, b"abcd")
out["slot8_word"] = h(c.read(2, 8, 2, 3))
out["read_private_locked"] = err(c.read, 2, 0, 0, 0, 32)
out["write_never"] = err(c.write, 2, 9, 0, 0, b"abcd")
c.write(2, 8, 1, 0, b"B" * 32)
out["slot8_after"] = h(c.read(2, 8, 1, 0, 32))
out["lock_unconfirmed"] = err(c.lock_slot, 2)
c.lock_slot(2, confirm="LOCK")
out["genkey_locked_slot"] = err(c.genkey, 2)
out["slot2"] = c.slot_config(2)
out["after"] = c.describe()
"""
    out = run(sock, body)
    assert out["info"][:6] == "000060"
    assert out["before"]["config_locked"] is False and out["before"]["data_locked"] is False
    assert out["before"]["serial"].startswith("0123") and out["before"]["serial"].endswith("ee")
    assert out["genkey_unlocked"][0] == 0x0F and "GenKey" in out["genkey_unlocked"][1]
    assert out["slots"] == _le(SLOT_CONFIG).hex() and out["keys"] == _le(KEY_CONFIG).hex()
    assert out["locked1"] == [True, False]
    assert out["write_after_lock"][0] == 0x0F and "Write" in out["write_after_lock"][1]
    pub0, pub2 = public(out["pub0"]), public(out["pub2"])
    assert out["pub0_again"] == out["pub0"] != out["pub2"]
    for digest, sig in zip(DIGESTS, out["sigs"], strict=True):
        verify(pub0, digest, sig)
    verify(pub2, DIGESTS[0], out["sig2"])
    with pytest.raises(InvalidSignature):
        verify(pub2, DIGESTS[0], out["sigs"][0])
    assert out["verify_ok"] is True and out["verify_bad"] is False
    assert bytes.fromhex(out["ecdh"]) == peer.exchange(ec.ECDH(), pub0)
    assert bytes.fromhex(out["eph_secret"]) == peer.exchange(ec.ECDH(), public(out["eph"]))
    for n, got in zip(SHA_LENGTHS, out["sha"], strict=True):
        assert got == hashlib.sha256(bytes(i & 0xFF for i in range(n))).hexdigest(), n
    assert len(set(out["random"])) == 2 and all(len(r) == 64 for r in out["random"])
    # Data slots are not readable before the data lock (datasheet §2.2), private ones never.
    assert out["read_unlocked"][0] == 0x0F and "Read" in out["read_unlocked"][1]
    assert out["read_private"][0] == 0x0F
    assert out["genkey_data_slot"][0] == 0x0F
    der = bytes.fromhex(out["csr"])
    req = x509.load_der_x509_csr(der)
    assert req.is_signature_valid
    assert req.public_key().public_numbers() == pub0.public_numbers()
    assert req.subject.rfc4514_string() == "O=upcert,CN=dev1"
    (tmp_path / "req.der").write_bytes(der)
    proc = subprocess.run([require("openssl"), "req", "-verify", "-noout", "-inform", "DER",
                           "-in", str(tmp_path / "req.der")], capture_output=True, text=True)
    assert proc.returncode == 0 and "verify OK" in proc.stdout + proc.stderr, proc.stderr
    assert out["wrong_crc"][0] == 0x0F and "Lock" in out["wrong_crc"][1]
    assert out["locked_wrong_crc"] == [True, False], "a wrong summary CRC does not lock"
    assert out["locked2"] == [True, True]
    assert out["slot8"] == (b"A" * 32 + b"Z" * 32).hex() and out["slot9"] == b"wwww".hex()
    assert out["write4_locked"] is None and out["slot8_word"] == b"abcd".hex()
    assert out["read_private_locked"][0] == 0x0F
    assert out["write_never"][0] == 0x0F
    assert out["slot8_after"] == (b"B" * 32).hex()
    assert out["lock_unconfirmed"][0] is None and 'confirm="LOCK"' in out["lock_unconfirmed"][1]
    assert out["genkey_locked_slot"][0] == 0x0F
    assert out["slot2"]["locked"] is True and out["slot2"]["genkey"] is True
    after = out["after"]
    assert after["config_locked"] and after["data_locked"] and after["key_slots"] == [0, 2, 3, 4]
    assert after["serial"] == out["before"]["serial"] and after["address"] == 0x60


def test_trust_and_go_chip_keeps_its_permanent_key(bus):
    sock, _ = bus
    body = f"""
c = ATECC(emu_machine.I2C(0, freq=100000), 0x35)
out["describe"] = c.describe()
out["slot0"] = c.slot_config(0)
out["slot2"] = c.slot_config(2)
out["pub0"] = h(c.public_key(0))
out["sig0"] = h(c.sign_digest(0, unhexlify({DIGESTS[0].hex()!r})))
out["genkey0"] = err(c.genkey, 0)
out["pub2"] = h(c.genkey(2))
out["sig2"] = h(c.sign_digest(2, unhexlify({DIGESTS[1].hex()!r})))
out["blank_lock"] = err(c.lock_config, "LOCK")
"""
    out = run(sock, body)
    d = out["describe"]
    assert d["config_locked"] and d["data_locked"] and d["address"] == 0x35
    assert 0 in d["key_slots"] and 2 in d["key_slots"]
    assert out["slot0"]["private"] and not out["slot0"]["genkey"] and out["slot0"]["ext_sign"]
    assert out["slot2"]["genkey"]
    verify(public(out["pub0"]), DIGESTS[0], out["sig0"])
    assert out["genkey0"][0] == 0x0F and "execution error" in out["genkey0"][1]
    verify(public(out["pub2"]), DIGESTS[1], out["sig2"])
    assert "locked already" in out["blank_lock"][1]


def test_bus_faults_are_recovered_or_reported_clearly(bus):
    sock, _ = bus
    body = f"""
c = ATECC(emu_machine.I2C(0, freq=100000), 0x35)
d = unhexlify({DIGESTS[0].hex()!r})
out["pub"] = h(c.public_key(0))
for fault, count in (("crc", 1), ("crc", 2), ("nack", 1), ("nack", 3), ("nowake", 1)):
    emu_i2c.control(0x35, {{"fault": fault, "count": count}})
    out[fault + str(count)] = h(c.sign_digest(0, d))
emu_i2c.control(0x35, {{"fault": "clear"}})
emu_i2c.control(0x35, {{"fault": "nowake", "count": -1}})
t0 = time.ticks_ms()
out["never_wakes"] = err(c.info)
out["never_wakes_ms"] = time.ticks_diff(time.ticks_ms(), t0)
emu_i2c.control(0x35, {{"fault": "clear"}})
emu_i2c.control(0x35, {{"fault": "busy_ms", "ms": 400}})
t0 = time.ticks_ms()
out["too_slow"] = err(c.info)
out["too_slow_ms"] = time.ticks_diff(time.ticks_ms(), t0)
emu_i2c.control(0x35, {{"fault": "clear"}})
t0 = time.ticks_ms()
while emu_i2c.control(0x35, {{"query": "state"}})["busy"]:  # the slow command still runs
    if time.ticks_diff(time.ticks_ms(), t0) > 2000:
        raise AssertionError("the chip still busy 2 s after a 405 ms command")
    time.sleep_ms(10)
out["after"] = h(c.sign_digest(0, d))
fast = ATECC(emu_machine.I2C(1, freq=400000), 0x35)
out["fast_bus"] = err(fast.info)
out["fast_refused"] = None
try:
    ATECC(emu_machine.I2C(1, freq=400000), 0x35, wake_freq=400000)
except ValueError as e:
    out["fast_refused"] = str(e)
"""
    out = run(sock, body)
    pub = public(out["pub"])
    for key in ("crc1", "crc2", "nack1", "nack3", "nowake1", "after"):
        verify(pub, DIGESTS[0], out[key])
    status, msg = out["never_wakes"]
    assert status is None and "did not wake" in msg and "pull-ups" in msg and "0x35" in msg
    assert out["never_wakes_ms"] < 500
    status, msg = out["too_slow"]
    # No answer within Info's 5 ms + 50 ms; the re-wake finds the chip still busy and fails
    # too, and the timeout is what gets reported.
    assert status is None and "Info: no answer in 55 ms" in msg and "pull-ups" in msg, msg
    assert out["too_slow_ms"] < 2000
    assert "did not wake" in out["fast_bus"][1]
    assert "100 kHz" in out["fast_refused"]


def test_watchdog_firing_mid_sequence_is_recovered(bus):
    """The host fires the chip's watchdog at moments the driver cannot predict while the board
    signs in a loop; a Sign whose TempKey was lost is redone, every signature verifies."""
    sock, chips = bus
    chip = chips["tng"]
    landed, stop = [], threading.Event()

    def signing():  # the board's loop has begun (its public key read before it)
        return stop.is_set() or any(cmd == "Sign" for cmd, _, _ in list(chip.history))

    def fire():
        try:
            wait_until(signing, 60, "the board's first Sign")
        except AssertionError:
            return  # nothing lands: the test fails on `landed` below
        # The sleeps here pace the injected fault; they wait for nothing.
        while not stop.is_set() and len(landed) < 5:
            if chip.state == "awake":
                chip.inject("watchdog", ms=0)
                landed.append(1)
                time.sleep(0.4)  # at most one hit per signing sequence and its rerun
            time.sleep(0.003)  # how often the chip is looked at for an awake moment

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    body = f"""
c = ATECC(emu_machine.I2C(0, freq=100000), 0x35)
out["pub"] = h(c.public_key(0))
out["sigs"] = []
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 4000:
    out["sigs"].append(h(c.sign_digest(0, unhexlify({DIGESTS[3].hex()!r}))))
"""
    try:
        out = run(sock, body)
    finally:
        stop.set()
        thread.join()
    assert landed, "the watchdog never fired while the chip was awake"
    pub = public(out["pub"])
    assert len(out["sigs"]) > 5
    for sig in out["sigs"]:
        verify(pub, DIGESTS[3], sig)
