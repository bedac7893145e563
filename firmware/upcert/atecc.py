# ATECC608A/B secure element on an injected I2C bus: wake/idle/sleep, CRC-16 framed commands,
# busy polling, retries, and the commands upcert needs. Sources: the ATECC608A/B
# "Complete data sheet" (§2.2 zones, Table 2-5 config; the command chapter), Microchip
# cryptoauthlib (lib/calib/*.c, lib/atca_cfgs.c), and the TNGTLS data sheet (§7.1.1 wake).
from binascii import hexlify
from time import sleep_ms, sleep_us, ticks_diff, ticks_ms

from micropython import const

from upcert.atecc_cmd import Crypto, Signer, check_slot, crc16  # noqa: F401 (re-exported)
from upcert.errors import AteccError

# Opcodes (cryptoauthlib calib_command.h) and max execution times in ms at the
# default clock (cryptoauthlib calib_execution.c, ATECC608-M0 table).
_READ = const(0x02)
_WRITE = const(0x12)
_NONCE = const(0x16)
_LOCK = const(0x17)
_RANDOM = const(0x1B)
_INFO = const(0x30)
_GENKEY = const(0x40)
_SIGN = const(0x41)
_ECDH = const(0x43)
_VERIFY = const(0x45)
_SHA = const(0x47)
_OPS = {  # opcode: (name, max ms)
    _READ: ("Read", 5), _WRITE: ("Write", 45), _NONCE: ("Nonce", 20), _LOCK: ("Lock", 35),
    _RANDOM: ("Random", 23), _INFO: ("Info", 5), _GENKEY: ("GenKey", 115), _SIGN: ("Sign", 115),
    _ECDH: ("ECDH", 75), _VERIFY: ("Verify", 105), _SHA: ("SHA", 36),
}  # fmt: skip
# Status packet codes (data sheet "Status/Error Codes"; cryptoauthlib isATCAError).
_STATUS = {
    0x01: "verify miscompare",
    0x03: "parse error: bad opcode, length or parameter",
    0x05: "ECC fault",
    0x07: "self-test failure",
    0x08: "RNG health test failure",
    0x0F: "execution error: the slot's configuration or the lock state forbids this command",
    0x11: "after wake",
    0xEE: "watchdog about to expire",
    0xFF: "CRC or communication error",
}
_WIRING = "check wiring, pull-ups and the I2C address"
_CMD_MAX = const(136)  # 03 count op p1 p2(2) + 128 bytes (Verify: R||S||X||Y) + crc(2)
_RSP_MAX = const(67)  # count + 64 bytes (GenKey, Sign) + crc(2)
# Wake: SDA low >= tWLO 60 us, then tWHI 1500 us before the chip answers; an awake chip ignores
# a wake pulse (TNGTLS data sheet §7.1.1 "Device is Asleep"). A failed wake is tried once more
# after ATCA_POST_DELAY_MSEC (25 ms: the power-on self test may still run; cryptoauthlib
# atca_iface.c atwake).
_WAKE_US = const(1500)
_POST_MS = const(25)
_WAKE_MAX_HZ = const(100000)
_POLL_MS = const(2)  # cryptoauthlib ATCA_POLLING_FREQUENCY_TIME_MSEC
_SLACK_MS = const(50)  # added to the max time: bus latency (the emulator is a host process)
# cryptoauthlib returns a response CRC error to the caller (calib_execute_command) and retries
# only the wake + send (rx_retries, 20 in cfg_ateccx08a_i2c_default). We resend a whole command
# sequence up to 2 more times on CRC/comm errors: a lost response of an idempotent command costs
# nothing, and GenKey then simply reports the key it made last.
_CRC_RETRIES = const(2)
_UNLOCKED = const(0x55)  # LockValue/LockConfig (config bytes 86/87): 0x55 unlocked, 0x00 locked


class ATECC(Crypto):
    """ATECC608A/B driver. i2c: a machine.I2C-like bus with writeto(addr, buf) and
    readfrom_into(addr, buf) that raises OSError on a NACK. addr: the 7-bit address (0x60 blank,
    0x35 Trust&Go, 0x36 TrustFLEX). wake_freq: the bus frequency in Hz if known.

    The wake pulse needs the bus at <= 100 kHz: address byte 0x00 holds SDA low for 8 bit
    times, 80 us at 100 kHz >= tWLO 60 us, only 20 us at 400 kHz. The ESP32 port's machine.I2C
    cannot change frequency after construction (its protocol has no init(): extmod/machine_i2c.c
    raises "I2C operation not supported"), and the driver must not build hardware, so the board
    constructs the bus at 100 kHz (as the ESP32-WROOM-32SE's own ATECC608A expects). Given a
    wake_freq above 100 kHz the constructor refuses (ValueError) instead of leaving a chip
    that never wakes.

    Every public command wakes the chip, runs, and idles it again (so the ~1.3 s watchdog never
    expires). Chip errors raise AteccError (.status: status byte, or None for no answer); bad
    arguments raise ValueError. No I/O in the constructor."""

    def __init__(self, i2c, addr=0x60, wake_freq=None):
        if addr not in range(1, 0x80) or (wake_freq or 0) > _WAKE_MAX_HZ:
            raise ValueError(
                "ATECC608 wants a 7-bit address (0x60, not 0xC0) and a bus at <= 100 kHz (the "
                "wake pulse), got %r and %r Hz" % (addr, wake_freq)
            )
        self._i2c = i2c
        self.addr = addr
        self._c = bytearray(_CMD_MAX)
        self._c[0] = 0x03  # word address "command"
        self._cv = memoryview(self._c)
        self._r = bytearray(_RSP_MAX)
        mv = memoryview(self._r)
        # Preallocated views: whole responses by length, and their data bytes (no per-response
        # allocation beyond the returned bytes).
        self._rv = {4: mv[:4], 7: mv[:7], 35: mv[:35], 67: mv[:67]}
        self._dv = {7: mv[1:5], 35: mv[1:33], 67: mv[1:65]}

    def _err(self, text, op=0, status=None):
        # "ATECC608 at 0x60: Sign: status 0x0F, execution error: the slot's configuration ..."
        if text is None:
            text = "status 0x%02X, %s" % (status, _STATUS.get(status, "unexpected"))
        if op:
            text = _OPS[op][0] + ": " + text
        return AteccError("ATECC608 at 0x%02x: %s" % (self.addr, text), status)

    def wake(self):
        """Wake the chip (write 0x00 to address 0, wait 1.5 ms) and check its 04 11 33 43 reply."""
        r = self._r
        for i in range(3):
            if i:
                # An awake chip ignores the pulse: idle it so the next one wakes it. One still
                # running a command (a program interrupted in the middle of one, e.g. by
                # Ctrl-C) NACKs the idle until it is done: 115 ms at most (GenKey, Sign).
                self.idle()
                sleep_ms(_POST_MS if i == 1 else 120)
                self.idle()
            try:
                self._i2c.writeto(0, b"\x00")
            except OSError:
                pass  # nobody acknowledges address 0: expected
            sleep_us(_WAKE_US)
            try:
                self._i2c.readfrom_into(self.addr, self._rv[4])
            except OSError:
                continue
            if r[0] == 4 and r[1] == 0x11 and r[2] == 0x33 and r[3] == 0x43:
                return
        raise self._err("did not wake: " + _WIRING)

    def idle(self, word=b"\x02"):
        """Idle mode: keeps TempKey, stops the watchdog. A NACK (chip asleep) is ignored."""
        try:
            self._i2c.writeto(self.addr, word)  # word address 0x02 idle, 0x01 sleep
        except OSError:
            pass  # already asleep (watchdog) or gone: nothing to put to rest

    def sleep(self):
        """Sleep mode: clears TempKey, lowest power. A NACK (chip asleep) is ignored."""
        self.idle(b"\x01")

    def _cmd(self, op, p1, p2, data, n):
        # One command on an awake chip; n = expected response length (4: status only).
        c = self._c
        m = len(data)
        c[1] = m + 7
        c[2] = op
        c[3] = p1
        c[4] = p2 & 0xFF
        c[5] = p2 >> 8
        if m:
            c[6 : 6 + m] = data
        crc = crc16(c, 0, 1, 6 + m)
        c[6 + m] = crc & 0xFF
        c[7 + m] = crc >> 8
        try:
            self._i2c.writeto(self.addr, self._cv[: 8 + m])
        except OSError:
            raise self._err("not acknowledged", op) from None
        limit = _OPS[op][1] + _SLACK_MS
        t0 = ticks_ms()
        while True:  # the chip NACKs reads while it executes (calib_execution.c)
            sleep_ms(_POLL_MS)
            try:
                self._i2c.readfrom_into(self.addr, self._rv[n])
                break
            except OSError:
                if ticks_diff(ticks_ms(), t0) > limit:
                    raise self._err("no answer in %d ms: %s" % (limit, _WIRING), op) from None
        r = self._r
        k = r[0]
        if k != 4 and k != n:
            raise self._err("bad length byte %d" % k, op, 0xFF)
        if crc16(r, 0, 0, k - 2) != r[k - 2] | r[k - 1] << 8:
            raise self._err("response CRC mismatch", op, 0xFF)
        if k == 4:
            s = r[1]
            if s == 0 and n == 4 or s == 1 and op == _VERIFY:
                return s
            raise self._err(None, op, s)
        return bytes(self._dv[n])

    def _run(self, *steps):
        # Wake, run the steps (op, p1, p2, data, response length), idle; results as a list.
        # CRC/comm errors rerun the sequence up to _CRC_RETRIES times; a watchdog status, a
        # failed wake-up, a lost command or a silent chip get one re-wake and rerun.
        # Giving up after a silent rerun, the first error is the one reported (a command that
        # timed out leaves the chip busy, so the re-wake fails too: the timeout is the news).
        bad = wd = 0
        first = None
        while True:
            try:
                self.wake()
                return [self._cmd(*s) for s in steps]
            except AteccError as e:
                s = e.status
                if s == 0xFF and bad < _CRC_RETRIES:
                    bad += 1
                elif s in (None, 0xEE, 0x11) and not wd:
                    wd = 1
                else:
                    raise first if s is None and first else e  # noqa: B904
                first = first or e
            finally:
                self.idle()

    def _where(self, zone, slot, block, offset, n):
        # Address parameter (data sheet "Address Encoding"): config/OTP
        # (block<<3)|word, data (block<<8)|(slot<<3)|word; offset: the 4-byte word in the block.
        check_slot(slot)
        # Zone sizes (datasheet §2.2): config 128, OTP 64; data slots 0-7 36, 8 416, 9-15 72.
        if (
            zone not in (0, 1, 2)
            or n not in (4, 32)
            or block < 0
            or not 0 <= offset < (8 if n == 4 else 1)
            or block * 32 + offset * 4 + n
            > ((36 if slot < 8 else 416 if slot == 8 else 72) if zone == 2 else 128 >> zone)
        ):
            raise ValueError(
                "bad access: zone %r slot %d block %r word %r, %r bytes"
                % (zone, slot, block, offset, n)
            )
        return (block << 8 | slot << 3 if zone == 2 else block << 3) | offset

    def read(self, zone, slot=0, block=0, offset=0, n=4):
        """n (4 or 32) bytes of zone 0 config / 1 OTP / 2 data slot `slot`, at 32-byte block
        `block` and 4-byte word `offset` within it."""
        # param1: zone, bit 7 set for a 32-byte access
        return self._run(
            (_READ, zone | n << 2 & 0x80, self._where(zone, slot, block, offset, n), b"", n + 3)
        )[0]

    def write(self, zone, slot, block, offset, data):
        """Write 4 or 32 bytes in clear (same addressing as read())."""
        n = len(data)
        self._run(
            (_WRITE, zone | n << 2 & 0x80, self._where(zone, slot, block, offset, n), data, 4)
        )

    def read_config(self):
        """The 128-byte configuration zone (datasheet Table 2-5)."""
        return b"".join(self._run(*((_READ, 0x80, b << 3, b"", 35) for b in range(4))))

    def write_config(self, offset, data):
        """Write data at byte `offset` of the config zone (before config lock) in 4-byte words.
        Words in bytes 0-15 (serial number, revision, fixed) and 84-87 (UserExtra and lock
        bytes: UpdateExtra and Lock set them) are skipped."""
        n = len(data)
        if offset < 0 or offset % 4 or n % 4 or offset + n > 128:
            raise ValueError("config writes: 4-byte aligned, within 128 bytes")
        for i in range(0, n, 4):
            p = offset + i
            if 16 <= p < 84 or p >= 88:
                self.write(0, 0, p >> 5, (p & 31) >> 2, data[i : i + 4])

    def info(self, mode=0):
        """Info command; mode 0 gives the revision, e.g. 00 00 60 02 (608A), 00 00 60 03 (608B)."""
        return self._run((_INFO, mode, 0, b"", 7))[0]

    def serial(self):
        """The 9-byte serial number: config bytes 0-3 and 8-12 (01 23 .. .. EE on real parts)."""
        b = self.read(0, 0, 0, 0, 32)
        return b[:4] + b[8:13]

    def locked(self):
        """(config zone locked, data+OTP zones locked), from config bytes 87 and 86."""
        w = self.read(0, 0, 2, 5)  # bytes 84-87
        return w[3] != _UNLOCKED, w[2] != _UNLOCKED

    def _confirm(self, confirm, what):
        if confirm != "LOCK":
            raise self._err('not locking %s: it cannot be undone; pass confirm="LOCK"' % what)

    def _lock(self, mode, crc):
        try:
            self._run((_LOCK, mode, crc, b"", 4))
        except AteccError as e:
            # A zone Lock rerun after its reply was lost finds the zone locked (0x0F): done.
            if e.status != 0x0F or mode & 2 or not self.locked()[mode & 1]:
                raise

    def lock_config(self, confirm=False):
        """Lock the config zone (irreversible) with the CRC-16 of the 128 bytes read back."""
        self.lock_data(confirm, None, 0)

    def lock_data(self, confirm=False, crc=None, _mode=1):
        """Lock the data and OTP zones (irreversible; needs the config zone locked). crc: the
        CRC-16 of the data zone: slots 0..15 in order, except private key slots (cryptoauthlib
        calib_lock.c skips KeyConfig.Private=1), then the 64-byte OTP zone. By default it is
        read back; a chip that refuses data reads before the data lock (status 0x0F, as the
        emulator and real parts do) is locked without the summary check (mode 0x81), as
        cryptoauthlib's atcab_lock_data_zone() does. Pass crc (see crc16) to have the chip
        check what you wrote."""
        self._confirm(confirm, "the %s zone" % ("config", "data")[_mode])
        cfg = self.read_config()
        # LockConfig is byte 87, LockValue (data) 86; the data zone locks after the config zone.
        if cfg[87 - _mode] != _UNLOCKED or _mode and cfg[87] == _UNLOCKED:
            raise self._err("zone locked already, or config zone not yet")
        if not _mode:
            crc = crc16(cfg)
        elif crc is None:
            crc = 0
            try:
                for s in range(17):
                    if s < 16 and cfg[96 + 2 * s] & 1:
                        continue
                    size = 64 if s > 15 else 36 if s < 8 else 416 if s == 8 else 72
                    a = 0
                    while a < size:  # 32-byte blocks, then 4 or 8 bytes (slots of 36, 72)
                        k = 32 if size - a >= 32 else 4
                        crc = crc16(self.read(1 + (s < 16), s & 15, a >> 5, a >> 2 & 7, k), crc)
                        a += k
            except AteccError as e:
                if e.status != 0x0F:
                    raise
                _mode = 0x81
        self._lock(_mode, crc)

    def lock_slot(self, slot, confirm=False):
        """Lock one slot (irreversible; needs the data zone locked and KeyConfig.Lockable)."""
        check_slot(slot)
        self._confirm(confirm, "slot %d" % slot)
        self._lock(0x02 | slot << 2, 0)

    def slot_config(self, n, config=None):
        """Slot n's SlotConfig and KeyConfig decoded (datasheet Table 2-5; key-slot meanings of
        the SlotConfig bits only when KeyConfig.Private). config: the 128 bytes if already read."""
        check_slot(n)
        c = config or self.read_config()
        sc = c[20 + 2 * n] | c[21 + 2 * n] << 8
        kc = c[96 + 2 * n] | c[97 + 2 * n] << 8
        p = kc & 1
        return {
            "slot_config": sc, "key_config": kc, "private": p > 0, "secret": sc & 0x80 > 0,
            "ext_sign": sc & p > 0, "int_sign": sc & 2 * p > 0, "ecdh": sc & 4 * p > 0,
            "genkey": sc & 0x2000 * p > 0, "write_config": sc >> 12, "pubinfo": kc & 2 > 0,
            "p256": kc & 0x1C == 0x10, "lockable": kc & 0x20 > 0,  # p256: KeyType 0b100
            "locked": not (c[88] | c[89] << 8) >> n & 1,
        }  # fmt: skip

    def describe(self):
        """Status summary: serial and revision (hex), address, lock state, private-key slots."""
        c = self.read_config()
        return {
            "serial": hexlify(c[:4] + c[8:13]).decode(),
            "revision": hexlify(c[4:8]).decode(),  # RevNum, as Info mode 0 returns it
            "address": self.addr,
            "config_locked": c[87] != _UNLOCKED,
            "data_locked": c[86] != _UNLOCKED,
            "key_slots": [s for s in range(16) if c[96 + 2 * s] & 1],
        }
