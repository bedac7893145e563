# Device tests for store "atecc608" (firmware/upcert/store_atecc.py) with a fake chip (the driver's
# method names; keys are upcert.p256 keys, so every signature is verified): certificate on the
# flash and in data slot 8, signer, describe, key references through stage/commit/rollback,
# a swapped chip, private_key() None and tlsconn's refusal, board.py and config.py wiring.
import hashlib
import os
import sys

from certdata import EC_DER, RSA_DER
from checks import eq, raises, tmpdir, true
from upcert import config, p256, tlsconn
from upcert.errors import ConfigError, ConnectError, StoreError, UpcertError
from upcert.store_atecc import AteccStore, parse_ref

SN = b"\x01\x23\xa1\xb2\xc3\xd4\xe5\xf6\xee"
SN_HEX = "0123a1b2c3d4e5f6ee"


class ChipRefused(UpcertError):
    """What the fake raises where the real chip answers 0x0F (execution error)."""


class FakeChip:
    """ATECC method names over dicts. gen: slots where GenKey is allowed (our layout: 0, 2-4)."""

    def __init__(self, sn=SN, gen=(0, 2, 3, 4), addr=0x60):
        self.addr, self.sn, self.gen = addr, sn, gen
        self.keys = {}
        self.slot8 = bytearray(416)
        self.calls = []

    def serial(self):
        self.calls.append("serial")
        return self.sn

    def info(self):
        return b"\x00\x00\x60\x03"

    def locked(self):
        return True, True

    def read_config(self):
        return b"\x55" * 128

    def slot_config(self, n, config=None):
        return {"genkey": n in self.gen, "locked": False, "private": n in (0, 2, 3, 4)}

    def genkey(self, slot):
        self.calls.append(("genkey", slot))
        if slot not in self.gen:
            raise ChipRefused("GenKey: execution error (0x0F)")
        self.keys[slot] = p256.generate()
        return self.public_key(slot)

    def public_key(self, slot):
        return self.keys[slot].public_point()[1:]

    def sign_digest(self, slot, digest32):
        self.calls.append(("sign", slot))
        r, s = self.keys[slot].sign_digest(digest32)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def read(self, zone, slot=0, block=0, offset=0, n=4):
        eq((zone, slot, offset, n), (2, 8, 0, 32), "only data slot 8 is read, in 32-byte blocks")
        return bytes(self.slot8[block * 32 : block * 32 + 32])

    def write(self, zone, slot, block, offset, data):
        eq((zone, slot, offset, len(data)), (2, 8, 0, 32), "only slot 8 is written, by block")
        self.slot8[block * 32 : block * 32 + 32] = data


_n = [0]


def _store(chip=None, cert="fs", root=None, **kw):
    if root is None:
        _n[0] += 1
        root = tmpdir("atecc%d" % _n[0]) + "/upcert.d"
    chip = chip or FakeChip()
    chip.keys.setdefault(0, p256.generate())  # as provisioning leaves it
    return AteccStore(chip, cert=cert, root=root, **kw)


def _signs_with(store, slot):
    # The store's signer signs a fresh digest; verified against the chip's key in `slot`.
    g = store.signer()
    d = hashlib.sha256(os.urandom(16)).digest()
    r, s = g.sign_digest(d)
    point = b"\x04" + store.chip.public_key(slot)
    eq(g.public_point(), point, "signer public point is slot %d's key" % slot)
    true(p256.verify_digest(point, d, r, s), "signature by slot %d verifies" % slot)


def test_certificate_signer_and_no_key_bytes():
    s = _store()
    eq(s.kind, "atecc608", "kind")
    s.write(EC_DER, s.ref(0))
    eq(s.certificate(), EC_DER, "certificate from the flash")
    eq(s.key_ref(), b"ATECC608 slot=0 sn=" + SN_HEX.encode(), "key reference")
    eq(s.private_key(), None, "private_key() is None: the key stays in the chip")
    eq(s.key_slot(), 0, "active key slot")
    _signs_with(s, 0)
    files = sorted(os.listdir(s.root))
    eq(files, ["cert.der", "key.ref"], "no key material on the flash, only the reference")
    with open(s.root + "/key.ref", "rb") as f:
        eq(f.read(), s.ref(0), "key.ref holds the reference")


def test_describe_names_the_chip_and_slots():
    s = _store()
    s.write(EC_DER, s.ref(0))
    d = s.describe()
    for k, v in (("kind", "atecc608"), ("serial", SN_HEX), ("revision", "00006003"),
                 ("address", "0x60"), ("config_locked", True), ("data_locked", True),
                 ("key_slot", 0), ("spare_slots", [2, 3, 4]), ("slot", "A"), ("cert_in", "fs"),
                 ("idle_key_slot", None)):
        eq(d.get(k), v, "describe " + k)
    true("error" not in d, "no error: %r" % d)
    d = _store().describe()  # nothing provisioned yet: says so, does not raise
    true("missing" in d["error"] and d["serial"] == SN_HEX, "unprovisioned describe: %r" % d)


def test_tlsconn_refuses_this_store_plainly():
    s = _store()
    s.write(EC_DER, s.ref(0))
    raises(ConnectError, tlsconn.make_context, s.certificate(), s.private_key(), [EC_DER],
           contains=("secure element", "takes only key bytes"))


def test_rotation_with_key_references():
    chip = FakeChip()
    s = _store(chip)
    root = s.root
    s.write(EC_DER, s.ref(0))
    old_pub = chip.public_key(0)
    g, ref = s.new_key()
    eq(parse_ref(ref), (2, SN_HEX), "new key in the first spare slot")
    eq(g.public_point(), b"\x04" + chip.public_key(2), "new signer is slot 2")
    s.stage(RSA_DER, ref)
    s = AteccStore(chip, root=root)  # a reboot before commit
    eq((s.key_slot(), s.certificate(), s.staged()), (0, EC_DER, (RSA_DER, ref)), "staged only")
    eq(chip.public_key(0), old_pub, "old key slot intact before the commit")
    _signs_with(s, 0)
    s.commit()
    s = AteccStore(chip, root=root)
    d = s.describe()
    eq((s.key_slot(), s.certificate(), d["slot"], d["idle_key_slot"]), (2, RSA_DER, "B", 0),
       "committed; slot 0 kept for rollback")
    _signs_with(s, 2)
    g, ref3 = s.new_key()  # slot 0 is the rollback target now: kept
    eq(parse_ref(ref3)[0], 3, "next rotation skips the active and the rollback key slots")
    s.rollback()
    s = AteccStore(chip, root=root)
    eq((s.key_slot(), s.certificate()), (0, EC_DER), "rolled back to slot 0")
    eq(chip.public_key(0), old_pub, "slot 0's key never changed")
    _signs_with(s, 0)
    s.stage(RSA_DER, s.ref(4))
    s.discard()
    eq((s.key_slot(), s.staged()), (0, None), "discard keeps the active identity")
    eq(sorted(os.listdir(root)), ["cert.der", "chip-slots.bin", "key.ref"], "staged files wiped")
    for want in (2, 3):  # two more rotations: slot 0 -> 2 -> 3, slot 2 the rollback target
        _, ref = s.new_key()
        eq(parse_ref(ref)[0], want, "rotation to slot %d" % want)
        s.stage(EC_DER, ref)
        s.commit()
    _, ref = AteccStore(chip, root=root).new_key()
    eq(parse_ref(ref)[0], 4, "slot 3 active, slot 2 the rollback target: slot 4")


def test_no_spare_slot_is_a_clear_error():
    chip = FakeChip(gen=(2,))  # Trust&Go-like: slot 0 permanent
    s = _store(chip, spares=(2,))
    s.write(EC_DER, s.ref(0))
    _, ref = s.new_key()
    s.stage(RSA_DER, ref)
    s.commit()
    raises(StoreError, s.new_key, contains=("no spare key slot", "GenKey"))
    eq(("genkey", 0) in chip.calls, False, "GenKey never tried where it is not allowed")


def test_swapped_chip_is_refused():
    s = _store()
    s.write(EC_DER, s.ref(0))
    other = FakeChip(sn=b"\x01\x23\x00\x00\x00\x00\x00\x01\xee")
    s2 = AteccStore(other, root=s.root)
    raises(StoreError, s2.private_key, contains=("made on ATECC608 " + SN_HEX, "swapped",
                                                  "upcert provision"))
    raises(StoreError, s2.signer, contains="swapped")
    true("swapped" in s2.describe()["error"], "describe names the swap")
    raises(StoreError, s2.write, EC_DER, s.ref(0), contains="swapped")
    raises(StoreError, s2.stage, EC_DER, s.ref(0), contains="swapped")


def test_bad_key_references():
    for bad in (b"", b"\x30\x81\x87", b"ATECC608 slot=16 sn=" + SN_HEX.encode(),
                b"ATECC608 slot=x sn=" + SN_HEX.encode(), b"ATECC608 slot=1 sn=0123"):
        raises(StoreError, parse_ref, bad, contains="not an ATECC608 key reference")
    s = _store()
    raises(StoreError, s.write, EC_DER, b"\x30\x81\x87PKCS8", contains="key reference")
    raises(StoreError, s.private_key, contains=("key.ref missing", "upcert provision"))


def test_certificate_in_data_slot_8():
    chip = FakeChip()
    s = _store(chip, cert="slot8")
    raises(StoreError, s.certificate, contains="data slot 8 missing or damaged")
    s.write(EC_DER, s.ref(0))
    eq(s.certificate(), EC_DER, "certificate from slot 8")
    eq(bytes(chip.slot8[: len(EC_DER)]), EC_DER, "stored in the chip")
    eq(sorted(os.listdir(s.root)), ["key.ref"], "nothing but the reference on the flash")
    raises(StoreError, s.write, RSA_DER, s.ref(0), contains=("710 bytes", "does not fit"))
    eq(AteccStore(chip, cert="slot8", root=s.root).certificate(), EC_DER, "old cert kept")
    _, ref = s.new_key()  # rotation: slot B's certificate is on the flash
    s.stage(RSA_DER, ref)
    s.commit()
    s = AteccStore(chip, cert="slot8", root=s.root)
    eq((s.certificate(), s.key_slot()), (RSA_DER, 2), "slot B from the flash")
    s.rollback()
    eq(AteccStore(chip, cert="slot8", root=s.root).certificate(), EC_DER, "slot A from slot 8")


def test_config_validates_the_atecc_store():
    base = {"thing": "t", "endpoint": "e"}
    good = {"kind": "atecc608", "address": 0x35, "slot": 0, "spares": [2, 3, 4], "sda": 16,
            "scl": 17, "cert": "slot8"}
    eq(config.validate(dict(base, store=good))["store"], good, "a full atecc608 store")
    for key, bad, want in (("address", 0x80, "'store.address' must be an integer 8..119"),
                           ("slot", 16, "'store.slot'"), ("cert", "nvs", "'store.cert'"),
                           ("spares", [2, 99], "'store.spares'"), ("sda", "16", "'store.sda'")):
        st = dict(good)
        st[key] = bad
        raises(ConfigError, config.validate, dict(base, store=st), contains=want)


class _Bus:
    made = []

    def __init__(self, id, sda=None, scl=None, freq=400000):
        _Bus.made.append((id, sda, scl, freq))


class _Machine:
    I2C = _Bus

    @staticmethod
    def Pin(n):
        return "Pin(%d)" % n


def test_board_builds_the_chip_store():
    sys.modules["machine"] = _Machine
    sys.path.insert(0, os.getcwd() + "/boards/esp32_generic")
    import board

    root = tmpdir("boardatecc") + "/upcert.d"
    s = board.store({"store": {"kind": "atecc608", "root": root}})
    eq((type(s).__name__, s.chip.addr, s.slot, s.spares, s.cert_in),
       ("AteccStore", 0x60, 0, (2, 3, 4), "fs"), "defaults: ESP32-WROOM-32SE")
    eq(_Bus.made[-1], (0, "Pin(16)", "Pin(17)", 100000), "I2C(0) on GPIO16/17 at 100 kHz")
    st = {"kind": "atecc608", "address": 0x35, "slot": 2, "spares": [3], "sda": 21, "scl": 22,
          "cert": "slot8", "root": root}
    s = board.store({"store": st})
    eq((s.chip.addr, s.slot, s.spares, s.cert_in), (0x35, 2, (3,), "slot8"), "overrides")
    eq(_Bus.made[-1], (0, "Pin(21)", "Pin(22)", 100000), "pins overridden")
    eq(len(_Bus.made), 2, "no I/O on the chip while building the store")
