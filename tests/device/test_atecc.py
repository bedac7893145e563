# Device tests for upcert.atecc (the ATECC608 driver) against a scripted I2C bus: CRC and frame
# known answers, wake, status codes, retries, busy polling, timeouts, lock guards, decoding.
import time

from checks import eq, raises, true
from fake_i2c import HANG, NACK, WAKE, Broken, FakeI2C, corrupt, packet, status
from upcert import csr, p256
from upcert.atecc import ATECC, Signer, crc16
from upcert.errors import AteccError

REV = b"\x00\x00\x60\x02"


def _chip(queue=(), addr=0x60):
    bus = FakeI2C(queue, addr)
    return ATECC(bus, addr), bus


def _config(slot_configs=(), key_configs=(), locked=False):
    # A 128-byte config zone: serial 01 23 .. EE, RevNum, I2C address 0xC0, given slots.
    c = bytearray(128)
    c[0:4] = b"\x01\x23\xaa\xbb"
    c[4:8] = REV
    c[8:13] = b"\xcc\xdd\xee\xff\xee"
    c[16] = 0xC0
    for n, v in slot_configs:
        c[20 + 2 * n] = v & 0xFF
        c[21 + 2 * n] = v >> 8
    for n, v in key_configs:
        c[96 + 2 * n] = v & 0xFF
        c[97 + 2 * n] = v >> 8
    c[86] = c[87] = 0x00 if locked else 0x55
    c[88] = c[89] = 0xFF
    return bytes(c)


def _config_queue(cfg):
    # One session reading the config zone: wake, then four 32-byte reads.
    return [WAKE] + [packet(cfg[i : i + 32]) for i in range(0, 128, 32)]


def test_crc_known_answers():
    eq(crc16(b"\x04\x11"), 0x4333, "CRC of 04 11 is 33 43 (little-endian)")
    eq(crc16(b"\x04\x00"), 0x4003, "CRC of 04 00 is 03 40")
    eq(crc16(b""), 0, "empty")
    eq(crc16(b"\x11", crc16(b"\x04")), crc16(b"\x04\x11"), "continues from a previous CRC")
    eq(crc16(b"\xff\x04\x11\xff", 0, 1, 3), 0x4333, "start/end select a range")


def test_info_bytes_on_the_wire():
    chip, bus = _chip([WAKE, packet(REV)])
    eq(chip.info(), REV, "revision")
    eq(
        bus.writes,
        [(0, b"\x00"), (0x60, b"\x03\x07\x30\x00\x00\x00\x03\x5d"), (0x60, b"\x02")],
        "wake pulse, Info command, idle",
    )
    eq(bus.reads, [(0x60, 4), (0x60, 7)], "wake reply, then count+4+CRC")


def test_constructor_does_no_io_and_checks_arguments():
    ATECC(Broken())
    ATECC(Broken(), 0x35, wake_freq=100000)
    raises(ValueError, ATECC, Broken(), 0xC0, contains="7-bit")
    raises(ValueError, lambda: ATECC(Broken(), wake_freq=400000), contains="100 kHz")


def test_wake_retries_then_fails_clearly_in_bounded_time():
    chip, bus = _chip([NACK, WAKE, packet(REV)])
    eq(chip.info(), REV, "a chip still in its power-on self test answers the second pulse")
    eq(bus.pulses(), 2, "two wake pulses")
    chip, bus = _chip([])
    t0 = time.ticks_ms()
    e = raises(AteccError, chip.info, contains=("0x60", "did not wake", "pull-ups"))
    # three pulses per wake(), spaced to outwait a command left running (115 ms at most), and
    # a failed wake-up gets one re-wake (_run): six pulses
    dt = time.ticks_diff(time.ticks_ms(), t0)
    true(290 <= dt < 800, "gives up after outwaiting a command twice, within 800 ms: %d ms" % dt)
    eq(bus.pulses(), 6, "six wake pulses")
    eq(e.status, None, "no status from a silent chip")
    eq(bus.commands(), [], "no command sent to a chip that never woke")
    chip, bus = _chip([b"\x07\x00\x00\x00\x00\x00\x00"] * 2)
    raises(AteccError, chip.random, contains="did not wake")


def test_every_status_code_has_a_name():
    names = {
        0x01: "verify miscompare",
        0x03: "parse error",
        0x05: "ECC fault",
        0x07: "self-test failure",
        0x08: "RNG health test failure",
        0x0F: "execution error: the slot's configuration or the lock state forbids",
        0x42: "unexpected",
    }
    for code, name in names.items():
        chip, _ = _chip([WAKE, status(code)])
        e = raises(AteccError, chip.genkey, 2, contains=("0x60", "GenKey", name))
        true("0x%02X" % code in str(e), "message names 0x%02X" % code)
        eq(e.status, code, "status attribute")
    retried = {0x11: "after wake", 0xEE: "watchdog about to expire"}
    for code, name in retried.items():
        chip, _ = _chip([WAKE, status(code)] * 2)
        e = raises(AteccError, chip.random, contains=("Random", name))
        eq(e.status, code, "status attribute")
    chip, _ = _chip([WAKE, status(0xFF)] * 3)
    e = raises(AteccError, chip.random, contains="CRC or communication error")
    eq(e.status, 0xFF, "status attribute")


def test_response_crc_error_is_retried_twice_then_reported():
    sig = bytes(range(64))
    chip, bus = _chip([WAKE, status(0), corrupt(packet(sig)), WAKE, status(0), packet(sig)])
    eq(chip.sign_digest(0, bytes(32)), sig, "the rerun sequence gives the signature")
    eq(len(bus.commands()), 4, "Nonce+Sign sent twice (TempKey is reloaded)")
    chip, bus = _chip([WAKE, corrupt(packet(REV))] * 3)
    e = raises(AteccError, chip.info, contains=("Info", "response CRC mismatch"))
    eq(e.status, 0xFF, "a CRC error is status 0xFF")
    eq(len(bus.commands()), 3, "three attempts in all")
    chip, _ = _chip([WAKE, status(0xFF), WAKE, packet(REV)])
    eq(chip.info(), REV, "the chip's own CRC complaint (0xFF) is retried too")
    chip, _ = _chip([WAKE, b"\x09\x00\x00\x00", WAKE, packet(REV)])
    eq(chip.info(), REV, "a malformed length byte counts as a comm error")


def test_busy_chip_is_polled_until_it_answers():
    pub = bytes(range(1, 65))
    chip, bus = _chip([WAKE] + [NACK] * 20 + [packet(pub)])
    eq(chip.genkey(2), pub, "answer after 20 NACKed polls")
    eq(len(bus.commands()), 1, "polling does not resend")
    eq(bus.commands()[0][1:6], b"\x07\x40\x04\x02\x00", "GenKey mode 0x04 slot 2")


def test_silent_chip_times_out_at_max_execution_time():
    chip, bus = _chip([WAKE, HANG, WAKE, HANG])
    t0 = time.ticks_ms()
    e = raises(AteccError, chip.sign_digest, 0, bytes(32), contains=("Nonce", "no answer in 70 ms"))
    dt = time.ticks_diff(time.ticks_ms(), t0)
    true(140 <= dt < 600, "two polls of Nonce's 20 ms + 50 ms slack, got %d ms" % dt)
    eq(e.status, None, "no status")
    eq(bus.pulses(), 2, "one re-wake")
    chip, bus = _chip([WAKE, HANG])  # still busy: the re-wake fails, the timeout is reported
    raises(AteccError, chip.info, contains="Info: no answer in 55 ms")
    eq(bus.pulses(), 4, "one failed re-wake (three pulses)")


def test_watchdog_status_rewakes_once():
    chip, bus = _chip([WAKE, status(0xEE), WAKE, packet(REV)])
    eq(chip.info(), REV, "retried after 0xEE")
    eq(bus.pulses(), 2, "re-woken")
    true((0x60, b"\x02") in bus.writes, "idled before the re-wake")
    chip, bus = _chip([WAKE, status(0xEE), WAKE, status(0xEE), WAKE, packet(REV)])
    raises(AteccError, chip.info, contains="watchdog")
    eq(bus.pulses(), 2, "only one retry")


def test_command_not_acknowledged_rewakes_once():
    chip, bus = _chip([WAKE, WAKE, packet(REV)])
    bus.nack_writes = 1  # the watchdog put the chip to sleep between wake and command
    eq(chip.info(), REV, "recovered")
    chip, bus = _chip([WAKE, WAKE])
    bus.nack_writes = 10
    raises(AteccError, chip.info, contains=("Info", "not acknowledged"))


def test_read_write_addressing():
    chip, bus = _chip([WAKE, packet(b"\x01\x02\x03\x04")])
    eq(chip.read(2, 8, 3, 2), b"\x01\x02\x03\x04", "data")
    eq(bus.commands()[0][2:6], b"\x02\x02\x42\x03", "Read zone 2, (3<<8)|(8<<3)|2 = 0x0342")
    chip, bus = _chip([WAKE, packet(bytes(32))])
    chip.read(0, 0, 3, 0, 32)
    eq(bus.commands()[0][2:6], b"\x02\x80\x18\x00", "32-byte config read of block 3")
    chip, bus = _chip([WAKE, status(0)])
    chip.write(1, 0, 1, 7, b"abcd")
    eq(bus.commands()[0][1:10], b"\x0b\x12\x01\x0f\x00abcd", "4-byte OTP write, word 7 of block 1")
    chip, bus = _chip([WAKE, status(0)])
    chip.write(2, 15, 1, 0, bytes(32))
    eq(bus.commands()[0][1:6], b"\x27\x12\x82\x78\x01", "32-byte write, slot 15 block 1")
    raises(ValueError, chip.write, 2, 15, 2, 0, bytes(32))  # slot 15 has 72 bytes


def test_bad_arguments_raise_value_errors_before_io():
    chip = ATECC(Broken())
    for args in ((3, 0, 0, 0), (2, 16, 0, 0), (2, 0, 0, 8), (2, 0, 2, 0), (0, 0, 4, 0)):
        raises(ValueError, chip.read, *args)
    raises(ValueError, chip.read, 2, 0, 0, 1, 32)  # 32-byte access must start at word 0
    raises(ValueError, chip.read, 2, 0, 1, 0, 32)  # slot 0 has 36 bytes: no second full block
    raises(ValueError, chip.read, 2, 0, 0, 0, 8)
    raises(ValueError, chip.write, 2, 0, 0, 0, b"abc")
    raises(ValueError, chip.genkey, -1, contains="slot")
    raises(ValueError, chip.sign_digest, 0, bytes(31), contains="digest must be 32 bytes")
    raises(ValueError, chip.verify_extern, bytes(32), bytes(64), bytes(63), contains="public")
    raises(ValueError, chip.ecdh, 0, bytes(65))
    raises(ValueError, chip.nonce_passthrough, b"")
    raises(ValueError, chip.write_config, 2, bytes(4))
    raises(ValueError, chip.write_config, 124, bytes(8))
    raises(ValueError, chip.sha256, bytes(1025))


def test_locks_need_confirmation_and_send_the_zone_crc():
    chip = ATECC(Broken())
    for fn in (chip.lock_config, chip.lock_data, lambda: chip.lock_slot(2)):
        raises(AteccError, fn, contains=('confirm="LOCK"', "cannot be undone"))
    raises(AteccError, lambda: chip.lock_config(confirm=True), contains="LOCK")
    cfg = _config()
    chip, bus = _chip(_config_queue(cfg) + [WAKE, status(0)])
    chip.lock_config(confirm="LOCK")
    crc = crc16(cfg)
    eq(bus.commands()[-1][1:6], bytes((7, 0x17, 0, crc & 0xFF, crc >> 8)), "Lock config + CRC")
    chip, bus = _chip(_config_queue(_config(locked=True)))
    raises(AteccError, lambda: chip.lock_config(confirm="LOCK"), contains="locked already")
    chip, bus = _chip([WAKE, status(0)])
    chip.lock_slot(3, confirm="LOCK")
    eq(bus.commands()[0][1:6], b"\x07\x17\x0e\x00\x00", "Lock mode 0x02 | 3 << 2")


def test_lock_recovers_when_the_first_reply_was_lost():
    cfg = _config()
    locked = bytearray(cfg[84:88])
    locked[3] = 0
    queue = _config_queue(cfg) + [WAKE, corrupt(status(0)), WAKE, status(0x0F)]
    chip, bus = _chip(queue + [WAKE, packet(locked)])
    chip.lock_config(confirm="LOCK")  # the rerun Lock finds the zone locked: success
    chip, bus = _chip(queue + [WAKE, packet(cfg[84:88])])
    raises(AteccError, lambda: chip.lock_config(confirm="LOCK"), contains="0x0F")


def test_lock_data_crc_skips_private_slots_and_ends_with_otp():
    cfg = bytearray(_config(key_configs=((0, 0x33), (2, 0x33)), locked=True))
    cfg[86] = 0x55  # data zone still unlocked
    queue = _config_queue(cfg)
    crc = 0
    for s in list(range(16)) + ["otp"]:
        if s in (0, 2):
            continue
        size = 64 if s == "otp" else 36 if s < 8 else 416 if s == 8 else 72
        content = bytes((7 * i + (3 if s == "otp" else s)) & 0xFF for i in range(size))
        crc = crc16(content, crc)
        a = 0
        while a < size:
            k = 32 if size - a >= 32 else 4
            queue += [WAKE, packet(content[a : a + k])]
            a += k
    chip, bus = _chip(queue + [WAKE, status(0)])
    chip.lock_data(confirm="LOCK")
    eq(bus.commands()[-1][1:6], bytes((7, 0x17, 1, crc & 0xFF, crc >> 8)), "Lock data + CRC")
    reads = [c[3:6] for c in bus.commands()[4:-1]]
    true(b"\x02\x00\x00" not in reads and b"\x82\x10\x00" not in reads, "slots 0, 2 unread")
    eq(reads[-1], b"\x81\x08\x00", "OTP block 1 last")
    chip, bus = _chip(_config_queue(cfg) + [WAKE, status(0)])
    chip.lock_data("LOCK", 0x1234)
    eq(bus.commands()[-1][3:6], b"\x01\x34\x12", "a given CRC is used as is")
    chip, _ = _chip(_config_queue(_config()))
    raises(AteccError, chip.lock_data, "LOCK", contains="config zone not yet")
    chip, bus = _chip(_config_queue(cfg) + [WAKE, status(0x0F), WAKE, status(0)])
    chip.lock_data("LOCK")  # data reads refused before the lock, as on real parts
    eq(bus.commands()[-1][1:6], b"\x07\x17\x81\x00\x00", "Lock data without summary CRC")


def test_write_config_skips_read_only_words():
    chip, bus = _chip([WAKE, status(0)] * 27)
    chip.write_config(0, bytes(range(128)))
    cmds = bus.commands()
    eq(len(cmds), 27, "words 16-83 and 88-127 only")
    eq(cmds[0][3:10], b"\x00\x04\x00\x10\x11\x12\x13", "byte 16 = block 0 word 4")
    eq(cmds[16][3:10], b"\x00\x14\x00\x50\x51\x52\x53", "byte 80 = block 2 word 4")
    eq(cmds[17][3:10], b"\x00\x16\x00\x58\x59\x5a\x5b", "then byte 88 = block 2 word 6")


def test_slot_config_and_describe_decode_the_config_zone():
    cfg = _config(((0, 0x2087), (8, 0x0000)), ((0, 0x0033), (8, 0x003C)), locked=True)
    chip = ATECC(Broken())
    d = chip.slot_config(0, cfg)
    want = {"slot_config": 0x2087, "key_config": 0x0033, "private": True, "secret": True,
            "ext_sign": True, "int_sign": True, "ecdh": True, "genkey": True,
            "write_config": 2, "pubinfo": True, "p256": True, "lockable": True,
            "locked": False}
    eq(d, want, "slot 0 of the upcert layout")
    d = chip.slot_config(8, cfg)
    got = (d["private"], d["genkey"], d["ext_sign"], d["p256"])
    eq(got, (False, False, False, False), "slot 8 is plain data")
    chip, _ = _chip(_config_queue(cfg))
    eq(
        chip.describe(),
        {"serial": "0123aabbccddeeffee", "revision": "00006002", "address": 0x60,
         "config_locked": True, "data_locked": True, "key_slots": [0]},
        "describe",
    )
    chip, _ = _chip([WAKE, packet(cfg[:32]), WAKE, packet(cfg[84:88])])
    eq(chip.serial(), b"\x01\x23\xaa\xbb\xcc\xdd\xee\xff\xee", "serial = bytes 0-3 + 8-12")
    eq(chip.locked(), (True, True), "locked")


def test_crypto_command_frames():
    chip, bus = _chip([WAKE, status(0), status(0)])
    true(chip.verify_extern(bytes(32), bytes(64), bytes(64)), "status 0: verified")
    eq(bus.commands()[1][1:6], b"\x87\x45\x02\x04\x00", "Verify external P-256, 128 bytes")
    chip, bus = _chip([WAKE, status(0), status(1)])
    eq(chip.verify_extern(bytes(32), bytes(64), bytes(64)), False, "status 1: miscompare")
    chip, bus = _chip([WAKE, packet(bytes(64)), packet(bytes(32))])
    pub, secret = chip.ecdh_ephemeral(bytes(64))
    eq(bus.commands()[0][1:6], b"\x07\x40\x04\xff\xff", "GenKey into TempKey (0xFFFF)")
    eq(bus.commands()[1][1:6], b"\x47\x43\x0d\x00\x00", "ECDH from TempKey, clear output")
    chip, bus = _chip([WAKE, packet(bytes(32))])
    chip.ecdh(2, bytes(64))
    eq(bus.commands()[0][1:6], b"\x47\x43\x0c\x02\x00", "ECDH slot 2, clear output")
    chip, bus = _chip([WAKE, status(0), status(0), status(0), packet(bytes(32))])
    chip.sha256(bytes(130))
    heads = [c[1:6] for c in bus.commands()]
    eq(heads, [b"\x07\x47\x00\x00\x00", b"\x47\x47\x01\x40\x00", b"\x47\x47\x01\x40\x00",
               b"\x09\x47\x02\x02\x00"], "SHA start, 2 updates of 64, end with 2 bytes")
    chip, bus = _chip([WAKE, packet(bytes(32))])
    chip.random()
    eq(bus.commands()[0], b"\x03\x07\x1b\x00\x00\x00" + bus.commands()[0][6:], "Random mode 0")


class _Recorder:
    # A software signer that remembers the digests it signed.
    def __init__(self, key):
        self.key = key
        self.digests = []

    def public_point(self):
        return self.key.public_point()

    def sign_digest(self, digest32):
        self.digests.append(digest32)
        return self.key.sign_digest(digest32)


def test_signer_signs_a_csr_that_verifies():
    key = p256.Key(0x1234567890ABCDEF)
    rec = _Recorder(key)
    want = csr.build(rec, [("CN", "dev1")])  # RFC 6979 nonces: the same bytes again below
    digest = rec.digests[0]
    r, s = key.sign_digest(digest)
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    chip, bus = _chip([WAKE, packet(key.public_point()[1:]), WAKE, status(0), packet(sig)])
    signer = Signer(chip, 0)
    eq(csr.build(signer, [("CN", "dev1")]), want, "the chip-signed CSR matches the software one")
    eq(bus.commands()[0][1:6], b"\x07\x40\x00\x00\x00", "GenKey mode 0x00: public key of slot 0")
    eq(bus.commands()[1][1:6], b"\x27\x16\x03\x00\x00", "Nonce pass-through of the digest")
    eq(bus.commands()[1][6:38], digest, "the digest went to the chip")
    eq(bus.commands()[2][1:6], b"\x07\x41\x80\x00\x00", "Sign external, slot 0")
    true(p256.verify_digest(signer.public_point(), digest, r, s), "verifies")
