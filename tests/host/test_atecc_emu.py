"""The ATECC608 emulator (upcert.emu.atecc) in-process, driven like a host drives a chip:
hand-built command frames on its bus interface, a controllable clock, every signature and
ECDH result checked with `cryptography`."""

import hashlib
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from upcert.emu.atecc import Atecc608
from upcert.emu.atecc_zones import SLOT_SIZES, crc16, new_zones
from upcert.errors import UpcertError

F100K = 100000
OK, MISCOMPARE, PARSE, EXEC, WAKE, WATCHDOG, COMM = 0x00, 0x01, 0x03, 0x0F, 0x11, 0xEE, 0xFF
INFO, READ, WRITE, LOCK, RANDOM, NONCE, GENKEY, SIGN, VERIFY, ECDH, SHA = (
    0x30, 0x02, 0x12, 0x17, 0x1B, 0x16, 0x40, 0x41, 0x45, 0x43, 0x47)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    def advance(self, s):
        self.t += s


def packet(opcode, p1=0, p2=0, data=b""):
    body = bytes((7 + len(data), opcode, p1)) + p2.to_bytes(2, "little") + bytes(data)
    return b"\x03" + body + crc16(body)


class Wire:
    """A host on the chip's bus: wake pulse, command packet, poll, read count then the rest
    (as cryptoauthlib's calib_execute_receive does)."""

    def __init__(self, chip, clock):
        self.chip, self.clock = chip, clock
        self.renew_watchdog = True  # on status 0xEE: idle, wake and send again (keeps TempKey)

    def wake(self, freq=F100K):
        self.chip.wake_pulse(8e6 / freq)
        self.clock.advance(0.0016)
        return self.response()

    def response(self, max_ms=300):
        for _ in range(max_ms):
            if self.chip.i2c_write(b"\x00", F100K):  # reset the address counter
                count = self.chip.i2c_read(1, F100K)
                rest = self.chip.i2c_read(count[0] - 1, F100K)
                return count + rest
            self.clock.advance(0.001)
        return None

    def run(self, opcode, p1=0, p2=0, data=b""):
        """The response payload; an int for a status packet."""
        assert self.chip.i2c_write(packet(opcode, p1, p2, data), F100K)
        resp = self.response()
        if resp is None and self.renew_watchdog:  # the watchdog hit first: wake, send again
            assert self.wake()[1] == WAKE
            return self.run(opcode, p1, p2, data)
        assert crc16(resp[:-2]) == resp[-2:], resp.hex()
        if resp[:2] == bytes((4, WATCHDOG)) and self.renew_watchdog:
            assert self.chip.i2c_write(b"\x02", F100K) and self.wake()[1] == WAKE
            return self.run(opcode, p1, p2, data)
        return resp[1] if resp[0] == 4 else resp[1:-2]


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def wire(clock):
    w = Wire(Atecc608(new_zones("blank", seed="t1"), clock=clock), clock)
    assert w.wake() == bytes.fromhex("04113343")
    return w


# The upcert layout (shared contract): slots 0, 2-4 sign+ECDH keys with GenKey, rest data.
UPCERT_SLOTS = {n: (0x2087, 0x0033) if n in (0, 2, 3, 4) else (0x0000, 0x003C) for n in range(16)}


def write_upcert_config(w):
    cfg = bytearray(w.run(READ, 0x80, 0) + w.run(READ, 0x80, 8) + w.run(READ, 0x80, 16)
                    + w.run(READ, 0x80, 24))
    for n, (sc, kc) in UPCERT_SLOTS.items():
        cfg[20 + 2 * n:22 + 2 * n] = sc.to_bytes(2, "little")
        cfg[96 + 2 * n:98 + 2 * n] = kc.to_bytes(2, "little")
    for word in range(4, 8):  # bytes 16-31 of block 0 (0-15 are read-only)
        assert w.run(WRITE, 0x00, word, cfg[word * 4:word * 4 + 4]) == OK
    assert w.run(WRITE, 0x80, 1 << 3, cfg[32:64]) == OK
    for word in range(16, 24):  # block 2 word by word, skipping 84-87 (word 21)
        if word != 21:
            assert w.run(WRITE, 0x00, word, cfg[word * 4:word * 4 + 4]) == OK
    assert w.run(WRITE, 0x80, 3 << 3, cfg[96:128]) == OK
    return cfg


def pubkey(xy):
    return ec.EllipticCurvePublicNumbers(int.from_bytes(xy[:32], "big"),
                                         int.from_bytes(xy[32:], "big"),
                                         ec.SECP256R1()).public_key()


def check_sig(pub64, digest, sig):
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pubkey(pub64).verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))  # raises if bad


def xy(key):
    n = key.public_key().public_numbers()
    return n.x.to_bytes(32, "big") + n.y.to_bytes(32, "big")


def test_crc_and_frames_known_answers():
    assert crc16(b"\x04\x11") == b"\x33\x43"
    assert crc16(b"\x04\x00") == b"\x03\x40"
    assert packet(INFO) == bytes.fromhex("030730000000035d")


def test_wake_status_packets_and_framing(clock):
    chip = Atecc608(new_zones("blank", seed="t1"), clock=clock)
    w = Wire(chip, clock)
    assert chip.i2c_read(4, F100K) is None and not chip.i2c_write(b"", F100K)  # asleep
    chip.wake_pulse(8e6 / 400000)  # 20 us at 400 kHz: too short for tWLO
    clock.advance(0.002)
    assert chip.i2c_read(4, F100K) is None
    chip.wake_pulse(8e6 / F100K)
    assert chip.i2c_read(4, F100K) is None  # tWHI: not ready before 1.5 ms
    clock.advance(0.0016)
    assert chip.i2c_read(4, F100K) == bytes.fromhex("04113343")
    rev = w.run(INFO)
    assert rev == bytes.fromhex("00006002")
    assert chip.i2c_write(packet(INFO), F100K)
    assert w.response() == b"\x07" + rev + crc16(b"\x07" + rev)
    bad = bytearray(packet(INFO))
    bad[-1] ^= 1
    assert chip.i2c_write(bytes(bad), F100K) and w.response() == bytes.fromhex("04ff") + crc16(
        b"\x04\xff")
    short = packet(INFO)[:1] + b"\x08" + packet(INFO)[2:]  # count says 8, 7 bytes sent
    assert chip.i2c_write(short, F100K) and w.response()[1] == COMM
    assert w.run(0x99) == PARSE and w.run(INFO, 0, 0, b"\x00") == PARSE
    assert w.run(INFO, 0x07) == PARSE
    assert not chip.i2c_write(b"\x05", F100K)  # an undefined word address is NACKed


def test_blank_chip_defaults(wire):
    cfg = b"".join(wire.run(READ, 0x80, b << 3) for b in range(4))
    assert cfg[0:2] == b"\x01\x23" and cfg[12] == 0xEE and cfg[16] == 0xC0
    assert cfg[86] == cfg[87] == 0x55 and cfg[88:90] == b"\xff\xff"
    assert cfg[20:22] == b"\x83\x20" and cfg[96:98] == b"\x33\x00"
    assert wire.run(READ, 0x00, 4) == cfg[16:20]  # a 4-byte read of word 4
    assert wire.run(RANDOM) == b"\xff\xff\x00\x00" * 8  # fixed until the config lock
    other = Atecc608(new_zones("blank", seed="t2")).describe()["serial"]
    assert wire.chip.describe()["serial"] == (cfg[0:4] + cfg[8:13]).hex() != other
    assert wire.chip.describe()["serial"] == Atecc608(new_zones("blank", seed="t1")).describe()[
        "serial"]
    assert wire.run(READ, 0x82, 8 << 3) == EXEC  # data zone reads need the data lock


def test_full_session_config_lock_keys_sign_ecdh_verify(wire):
    w = wire
    cfg = write_upcert_config(w)
    assert w.run(WRITE, 0x00, 0, b"\x00" * 4) == EXEC  # serial number bytes
    assert w.run(WRITE, 0x00, 21, b"\x00" * 4) == EXEC  # UserExtra..LockConfig
    assert w.run(WRITE, 0x80, 2 << 3, cfg[64:96]) == EXEC  # a block holding 84-87
    assert w.run(GENKEY, 0x04, 0) == EXEC  # config not locked yet
    assert w.run(WRITE, 0x82, 8 << 3, b"\x11" * 32) == EXEC  # data writes need the config lock
    assert w.run(LOCK, 0x00, 0x1234) == EXEC  # wrong summary
    summary = int.from_bytes(crc16(cfg), "little")
    assert w.run(LOCK, 0x00, summary) == OK
    assert w.run(LOCK, 0x00, summary) == EXEC and w.run(WRITE, 0x00, 5, b"\x00" * 4) == EXEC
    assert w.run(RANDOM) != b"\xff\xff\x00\x00" * 8
    pub = w.run(GENKEY, 0x04, 0)
    assert len(pub) == 64 and w.run(GENKEY, 0x00, 0) == pub
    assert w.run(INFO, 0x01, 0)[0] == 1 and w.run(INFO, 0x01, 5)[0] == 0
    assert w.run(SIGN, 0x80, 0) == EXEC  # no TempKey yet
    for text in (b"one", b"two", b"three"):
        digest = hashlib.sha256(text).digest()
        assert w.run(NONCE, 0x03, 0, digest) == OK
        assert w.run(INFO, 0x02)[1] & 0x80  # State: TempKey.Valid
        check_sig(pub, digest, w.run(SIGN, 0x80, 0))
        assert w.run(SIGN, 0x80, 0) == EXEC  # TempKey was consumed
    assert w.run(GENKEY, 0x04, 1) == EXEC and w.run(SIGN, 0x80, 1) == EXEC  # data slot
    # data zone before its lock: clear writes allowed, reads refused; private slots never
    assert w.run(WRITE, 0x82, 8 << 3, b"\x11" * 32) == OK
    assert w.run(WRITE, 0x02, 8 << 3, b"\x11" * 4) == EXEC  # 32-byte writes until the lock
    assert w.run(WRITE, 0x82, 2 << 8 | 9 << 3, b"\x33" * 32) == OK  # last block: 8 bytes kept
    assert w.run(WRITE, 0x82, 0, b"\x00" * 32) == EXEC
    data = [bytes(s) for s in SLOT_SIZES]
    data[8] = b"\x11" * 32 + bytes(SLOT_SIZES[8] - 32)
    data[9] = bytes(64) + b"\x33" * 8
    good = crc16(b"".join(d for n, d in enumerate(data) if n not in (0, 2, 3, 4)) + bytes(64))
    assert w.run(LOCK, 0x01, int.from_bytes(good, "little") ^ 1) == EXEC
    assert w.run(LOCK, 0x01, int.from_bytes(good, "little")) == OK
    assert w.run(READ, 0x82, 8 << 3) == b"\x11" * 32
    assert w.run(READ, 0x82, 2 << 8 | 9 << 3) == b"\x33" * 8 + bytes(24)
    assert w.run(READ, 0x82, 3 << 8 | 9 << 3) == PARSE  # beyond the 72-byte slot
    assert w.run(READ, 0x82, 0) == EXEC and w.run(READ, 0x02, 2 << 3) == EXEC  # private slots
    assert w.run(WRITE, 0x02, (8 << 3) | 1, b"\x22" * 4) == OK  # WriteConfig Always
    assert w.run(READ, 0x02, (8 << 3) | 1) == b"\x22" * 4
    pub2 = w.run(GENKEY, 0x04, 2)
    assert w.run(LOCK, 0x02 | 2 << 2) == OK and w.run(LOCK, 0x02 | 2 << 2) == EXEC
    assert w.run(GENKEY, 0x04, 2) == EXEC and w.run(GENKEY, 0x00, 2) == pub2
    assert w.run(LOCK, 0x02 | 8 << 2) == OK and w.run(WRITE, 0x82, 8 << 3, bytes(32)) == EXEC
    # ECDH with the slot key, clear output, against cryptography
    peer = ec.generate_private_key(ec.SECP256R1())
    assert w.run(ECDH, 0x0C, 0, xy(peer)) == peer.exchange(ec.ECDH(), pubkey(pub))
    assert w.run(ECDH, 0x0C, 0, b"\x01" * 64) == EXEC  # not a curve point
    # ephemeral key in TempKey, then ECDH from TempKey (consumed)
    eph = w.run(GENKEY, 0x04, 0xFFFF)
    assert w.run(ECDH, 0x0D, 0, xy(peer)) == peer.exchange(ec.ECDH(), pubkey(eph))
    assert w.run(ECDH, 0x0D, 0, xy(peer)) == EXEC
    # Verify external against a signature made by cryptography
    digest = hashlib.sha256(b"verify me").digest()
    sig = peer.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(sig)
    rs = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert w.run(NONCE, 0x03, 0, digest) == OK and w.run(VERIFY, 0x02, 4, rs + xy(peer)) == OK
    assert w.run(NONCE, 0x03, 0, digest[::-1]) == OK
    assert w.run(VERIFY, 0x02, 4, rs + xy(peer)) == MISCOMPARE
    # SHA-256 through the chip
    msg = os.urandom(150)
    assert w.run(SHA, 0x00) == OK
    assert w.run(SHA, 0x01, 64, msg[:64]) == OK and w.run(SHA, 0x01, 64, msg[64:128]) == OK
    assert w.run(SHA, 0x02, 22, msg[128:]) == hashlib.sha256(msg).digest()
    assert w.run(SHA, 0x01, 64, msg[:64]) == EXEC  # no context after the end


def test_trust_and_go_layout(clock):
    chip = Atecc608(new_zones("tng", seed="t3"), clock=clock)
    assert chip.address == 0x35 and chip.describe()["key_slots"] == [0, 1, 2, 3, 4]
    w = Wire(chip, clock)
    assert w.wake()[1] == WAKE and w.run(INFO) == bytes.fromhex("00006003")
    cfg = w.run(READ, 0x80, 16)
    assert cfg[22:24] == b"\x00\x00"  # 86, 87: data and config locked
    assert w.run(GENKEY, 0x04, 0) == EXEC  # permanent key: WriteConfig has no GenKey bit
    pub = w.run(GENKEY, 0x00, 0)
    digest = hashlib.sha256(b"tng").digest()
    assert w.run(NONCE, 0x03, 0, digest) == OK
    check_sig(pub, digest, w.run(SIGN, 0x80, 0))
    assert len(w.run(GENKEY, 0x04, 2)) == 64  # secondary keys may be regenerated
    assert w.run(WRITE, 0x00, 5, bytes(4)) == EXEC and w.run(READ, 0x82, 0) == EXEC
    assert w.run(READ, 0x82, 8 << 3) == bytes(32) and w.run(RANDOM) != b"\xff\xff\x00\x00" * 8


def test_watchdog_idle_and_sleep(wire, clock):
    w = wire
    w.renew_watchdog = False
    zones = w.chip.zones
    zones.config[87] = 0x00  # config locked, key in slot 0 (set up directly)
    assert len(w.run(GENKEY, 0x04, 0)) == 64
    assert w.chip.i2c_write(b"\x01", F100K)
    woke = clock.t
    assert w.wake()[1] == WAKE and w.run(NONCE, 0x03, 0, bytes(32)) == OK
    clock.t = woke + 1.1
    assert w.run(INFO) == bytes.fromhex("00006002")
    clock.t = woke + 1.25
    assert w.run(SIGN, 0x80, 0) == WATCHDOG  # 115 ms would end after the 1.3 s watchdog
    clock.advance(0.06)
    assert w.chip.i2c_read(1, F100K) is None and w.chip.describe()["state"] == "sleep"
    assert w.wake()[1] == WAKE and w.run(SIGN, 0x80, 0) == EXEC  # TempKey was lost
    assert w.run(NONCE, 0x03, 0, bytes(32)) == OK
    assert w.chip.i2c_write(b"\x02", F100K)  # idle: TempKey kept, watchdog stopped
    clock.advance(5)
    assert w.wake()[1] == WAKE and len(w.run(SIGN, 0x80, 0)) == 64
    assert w.run(NONCE, 0x03, 0, bytes(32)) == OK
    assert w.chip.i2c_write(b"\x01", F100K)  # sleep: TempKey lost
    assert w.wake()[1] == WAKE and w.run(SIGN, 0x80, 0) == EXEC
    zones.config[19] |= 0x04  # ChipMode: the long (~13 s) watchdog, after the next wake
    assert w.chip.i2c_write(b"\x01", F100K) and w.wake()[1] == WAKE
    clock.advance(5)
    assert w.run(INFO) == bytes.fromhex("00006002")


def test_busy_chip_nacks_until_done(wire, clock):
    chip = wire.chip
    chip.zones.config[87] = 0x00
    assert chip.i2c_write(packet(GENKEY, 0x04, 0), F100K)
    assert chip.i2c_read(1, F100K) is None and not chip.i2c_write(b"\x00", F100K)
    clock.advance(0.114)
    assert chip.i2c_read(1, F100K) is None
    clock.advance(0.002)
    assert chip.i2c_read(1, F100K) == b"\x43"  # 64 bytes + 3


def test_fault_injection(wire, clock):
    w, chip = wire, wire.chip
    chip.inject("crc", 1)
    assert chip.i2c_write(packet(INFO), F100K)
    resp = w.response()
    assert crc16(resp[:-2]) != resp[-2:]
    assert w.run(INFO) == bytes.fromhex("00006002")  # the next one is clean
    assert chip.control({"fault": "nack", "count": 2}) == {"ok": True}
    assert not chip.i2c_write(b"\x00", F100K) and chip.i2c_read(1, F100K) is None
    assert chip.i2c_write(b"\x00", F100K)
    chip.inject("busy_ms", ms=50)
    assert chip.i2c_write(packet(INFO), F100K)
    clock.advance(0.054)
    assert chip.i2c_read(1, F100K) is None
    clock.advance(0.002)
    assert chip.i2c_read(1, F100K) == b"\x07"
    chip.inject("busy_ms", ms=0)
    assert chip.control({"fault": "watchdog", "ms": 0}) == {"ok": True}
    assert chip.describe()["state"] == "sleep"
    assert chip.control({"fault": "nowake", "count": 1}) == {"ok": True}
    chip.wake_pulse(80)
    clock.advance(0.002)
    assert chip.i2c_read(4, F100K) is None
    assert w.wake()[1] == WAKE
    chip.i2c_write(b"\x01", F100K)
    assert chip.control({"fault": "nowake"}) == {"ok": True}  # forever
    for _ in range(3):
        chip.wake_pulse(80)
        clock.advance(0.002)
        assert chip.i2c_read(4, F100K) is None
    chip.inject("clear")
    assert w.wake()[1] == WAKE
    assert "error" in chip.control({"fault": "melt"}) and "error" in chip.control([1])
    state = chip.control({"query": "state"})
    assert state["state"] == "awake" and state["address"] == 0x60 and "keys" not in state
    assert w.run(GENKEY, 0x04, 0) == EXEC
    assert chip.describe()["last_error"] == "GenKey: GenKey needs the config zone locked"


def test_parse_errors(wire):
    w = wire
    assert w.run(READ, 0x03, 0) == PARSE and w.run(READ, 0x00, 0, b"\x00") == PARSE
    assert w.run(READ, 0x00, 0x20) == PARSE and w.run(READ, 0x80, 1) == PARSE
    assert w.run(WRITE, 0x00, 5, b"\x00" * 5) == PARSE
    assert w.run(NONCE, 0x03, 0, b"\x00" * 31) == PARSE and w.run(NONCE, 0x02, 0) == PARSE
    assert w.run(LOCK, 0x40) == PARSE and w.run(GENKEY, 0x04, 16) == PARSE
    assert w.run(VERIFY, 0x02, 0, bytes(128)) == PARSE and w.run(SIGN, 0x82, 0) == PARSE
    assert w.run(ECDH, 0x0C, 0, bytes(63)) == PARSE and w.run(SHA, 0x08) == PARSE


def test_state_file_survives_a_reload(tmp_path, clock):
    path = tmp_path / "atecc608.json"
    chip = Atecc608.open(path, "blank", seed="p1", clock=clock)
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
    w = Wire(chip, clock)
    w.wake()
    cfg = write_upcert_config(w)
    assert w.run(LOCK, 0x00, int.from_bytes(crc16(cfg), "little")) == OK
    pub = w.run(GENKEY, 0x04, 0)
    state = json.loads(path.read_text())
    assert state["layout"] == "blank" and set(state["keys"]) == {"0"}
    assert not list(tmp_path.glob("*.tmp")) and (path.stat().st_mode & 0o777) == 0o600
    again = Atecc608.open(path, "blank", clock=clock)  # a reboot: same chip, new process
    w2 = Wire(again, clock)
    assert w2.wake()[1] == WAKE and w2.run(GENKEY, 0x00, 0) == pub
    assert again.describe()["config_locked"] and again.describe()["serial"] == \
        chip.describe()["serial"]
    with pytest.raises(UpcertError, match="delete"):
        Atecc608.open(path, "tng")
    path.write_text("{\"layout\": \"blank\"}")
    with pytest.raises(UpcertError, match="not an emulated ATECC608"):
        Atecc608.open(path, "blank")
    with pytest.raises(UpcertError, match="layout"):
        new_zones("trustflex")


@settings(max_examples=400, deadline=None)
@given(op=st.sampled_from([INFO, READ, WRITE, LOCK, RANDOM, NONCE, GENKEY, SIGN, VERIFY, ECDH,
                           SHA, 0x00, 0x77]),
       p1=st.integers(0, 255), p2=st.sampled_from([0, 1, 4, 8, 15, 16, 64, 0x100, 0xFFFF]),
       data=st.sampled_from([0, 1, 4, 20, 32, 63, 64, 128, 130]).flatmap(
           lambda n: st.binary(min_size=n, max_size=n)),
       locked=st.booleans())
def test_any_packet_gets_a_well_formed_answer(op, p1, p2, data, locked):
    clock = Clock()
    chip = Atecc608(new_zones("tng" if locked else "blank", seed="fuzz"), clock=clock)
    w = Wire(chip, clock)
    w.wake()
    assert chip.i2c_write(packet(op, p1, p2, data), F100K)
    resp = w.response()
    assert resp is not None and resp[0] == len(resp) and crc16(resp[:-2]) == resp[-2:]
    assert resp[0] != 4 or resp[1] in (OK, MISCOMPARE, PARSE, EXEC)


def test_power_cut_after_the_nth_command(clock):
    # Armed, the chip counts every command it runs and traces it (EEPROM changed or not); after
    # the Nth it asks for the power cut once and answers nothing more until power_cycle().
    chip = Atecc608(new_zones("tng", seed="t9"), clock=clock)
    cuts = []
    chip.on_cut = lambda: cuts.append(chip.counted)
    chip.stamp = lambda: 7
    w = Wire(chip, clock)
    assert w.wake()[1] == WAKE
    assert chip.control({"cut_after_commands": 3}) == {"ok": True}
    assert w.run(INFO) == bytes.fromhex("00006003")
    assert w.run(GENKEY, 0x04, 0) == EXEC  # refused: counted all the same
    assert not cuts and not chip.cut_pending
    assert len(w.run(GENKEY, 0x04, 2)) == 64  # the third: the key is in the EEPROM, then the cut
    assert cuts == [3] and chip.cut_pending
    got = chip.control({"query": "commands"})
    assert (got["count"], got["armed"]) == (3, 0)
    assert [(t["cmd"], t["p1"], t["p2"], t["status"], t["eeprom"], t["writes"])
            for t in got["trace"]] == [("Info", 0, 0, 0, False, 7),
                                      ("GenKey", 4, 0, EXEC, False, 7),
                                      ("GenKey", 4, 2, 0, True, 7)]
    assert len(w.run(GENKEY, 0x04, 3)) == 64 and cuts == [3]  # disarmed after one cut
    chip.power_cycle()
    assert not chip.cut_pending and chip.describe()["state"] == "sleep"
    assert "error" in chip.control({"cut_after_commands": -1})
    assert chip.control({"cut_after_commands": 0}) == {"ok": True}
    assert chip.control({"query": "commands"}) == {"count": 0, "armed": 0, "trace": []}
