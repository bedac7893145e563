"""ATECC608 emulator, part 3: the commands. Each handler takes (chip, param1, param2, data) and
returns the response payload (bytes) or None for a plain success status, or raises CmdError.

Opcodes, modes and maximum execution times: cryptoauthlib `calib_command.h` and
`calib_execution.c` (table device_execution_time_608_m0, the default clock divider); access rules:
ATECC608A/B data sheet §2.2 and the shared contract. What is not modeled answers 0x0F with a
reason (see chip.last_error) and is listed in boards/unix/README.md.
"""

import hashlib
import os

from upcert.emu import atecc_crypto as p256
from upcert.emu.atecc_zones import LOCKED, SLOT_SIZES, crc16

OK, MISCOMPARE, PARSE, ECC_FAULT, EXEC, WAKE, WATCHDOG, COMM = (
    0x00, 0x01, 0x03, 0x05, 0x0F, 0x11, 0xEE, 0xFF)
FIXED_RANDOM = b"\xff\xff\x00\x00" * 8  # the RNG before the config lock (ATSHA204A DS §8.5.14)


class CmdError(Exception):
    """A command failed with `status`; `why` says which rule (for logs and tests)."""

    def __init__(self, status, why):
        super().__init__(why)
        self.status, self.why = status, why


class TempKey:
    """The volatile TempKey register and the flags Info(State) reports."""

    def __init__(self, value, source_input=False, gen_key=False, key_id=0):
        self.value, self.source_input, self.gen_key, self.key_id = (
            bytes(value), source_input, gen_key, key_id)


def _parse(cond, why):
    if cond:
        raise CmdError(PARSE, why)


def _exec(cond, why):
    if cond:
        raise CmdError(EXEC, why)


# -- addresses (data sheet "Address Encoding": config/OTP (block<<3)|word, data (block<<8)|(slot<<3)|word)
def _offset(p2, n, mask, size, what):
    _parse(p2 & ~mask & 0xFFFF, f"{what} address {p2:#06x} has bits set outside {mask:#x}")
    block, word = p2 >> 3, p2 & 7
    _parse(n == 32 and word, "a 32-byte access must start at word 0 of a block")
    off = block * 32 + word * 4
    _parse(off >= size, f"{what} address {p2:#06x} is beyond the zone")
    return off


def _data_offset(p2, n):
    _parse(p2 & 0x80, f"data address {p2:#06x}: bit 7 must be 0")
    slot, block, word = (p2 >> 3) & 0xF, p2 >> 8, p2 & 7
    _parse(n == 32 and word, "a 32-byte access must start at word 0 of a block")
    off = block * 32 + word * 4
    _parse(off >= SLOT_SIZES[slot], f"block {block} is beyond slot {slot} "
                                    f"({SLOT_SIZES[slot]} bytes)")
    return slot, off


def _need_config_lock(z, what):
    _exec(not z.config_locked(), f"{what} needs the config zone locked")


def info(chip, p1, p2, data):
    _parse(data, "Info takes no data")
    z = chip.zones
    if p1 == 0x00:  # Revision
        return bytes(z.config[4:8])
    if p1 == 0x01:  # KeyValid: byte 0 is 1 when the slot holds a usable private key
        _parse(p2 > 15, f"KeyValid slot {p2} > 15")
        return bytes((1 if p2 in z.keys and z.is_private(p2) else 0, 0, 0, 0))
    if p1 == 0x02:  # State (u16 LE): TempKey flags bits 0-7, RNG/auth bits 8-14, bit 15 Valid
        tk, word = chip.tempkey, 0
        if tk is not None:
            word = (tk.key_id & 0xF) | tk.source_input << 4 | tk.gen_key << 6 | 1 << 15
        return word.to_bytes(2, "little") + b"\x00\x00"
    if p1 == 0x03:  # GPIO: no pin is modeled; reads low
        return bytes(4)
    raise CmdError(PARSE, f"Info mode {p1:#04x} unknown")


def read(chip, p1, p2, data):
    _parse(data or p1 & 0x7C or p1 & 3 == 3, "Read: zone bits 2-6 must be 0, zone 0-2, no data")
    z, zone, n = chip.zones, p1 & 3, 32 if p1 & 0x80 else 4
    if zone == 0:  # the config zone is always readable
        off = _offset(p2, n, 0x1F, 128, "config")
        return bytes(z.config[off:off + n])
    if zone == 1:
        off = _offset(p2, n, 0x0F, 64, "OTP")
        return bytes(z.otp[off:off + n])
    slot, off = _data_offset(p2, n)
    _exec(not z.data_locked(), "data zone reads need the data zone locked")
    _exec(z.key_config(slot) & 1, f"slot {slot} holds a private key: never readable")
    _exec(z.slot_config(slot) & 0x80, f"slot {slot} is secret (SlotConfig.IsSecret)")
    _exec(z.slot_config(slot) & 0x40, f"slot {slot} needs encrypted reads (not modeled)")
    out = bytes(z.data[slot][off:off + n])
    return out + bytes(n - len(out))  # past the end of the last block reads as zeros


def write(chip, p1, p2, data):
    _parse(p1 & 0x3C or p1 & 3 == 3, "Write: zone bits 2-5 must be 0, zone 0-2")
    z, zone, n = chip.zones, p1 & 3, 32 if p1 & 0x80 else 4
    _parse(len(data) != n + (32 if p1 & 0x40 else 0), f"Write of {n} bytes got {len(data)}")
    _exec(p1 & 0x40, "encrypted writes (with a MAC) are not modeled")
    if zone == 0:
        off = _offset(p2, n, 0x1F, 128, "config")
        _exec(z.config_locked(), "the config zone is locked")
        _exec(off < 16, "config bytes 0-15 (serial, revision) are read-only")
        _exec(off < 88 and off + n > 84, "config bytes 84-87 are set by UpdateExtra and Lock")
        z.config[off:off + n] = data
    elif zone == 1:
        off = _offset(p2, n, 0x0F, 64, "OTP")
        _need_config_lock(z, "writing the OTP zone")
        _exec(z.data_locked(), "the OTP zone is read-only once the data zone is locked")
        _exec(n == 4, "before the data lock the OTP zone takes 32-byte writes only")
        z.otp[off:off + n] = data
    else:
        slot, off = _data_offset(p2, n)
        _need_config_lock(z, "writing the data zone")
        _exec(z.key_config(slot) & 1, f"slot {slot} is a private key slot: Write cannot set "
                                       "it (GenKey makes keys; PrivWrite is not modeled)")
        sc = z.slot_config(slot)
        _exec(n == 4 and sc & 0x80, f"slot {slot} is secret: 32-byte writes only")
        # cryptoauthlib calib_write_bytes_zone: "If data zone is unlocked, only 32-byte writes
        # are allowed to slots and OTP"
        _exec(n == 4 and not z.data_locked(), "before the data lock slots take 32-byte writes")
        if z.data_locked():
            _exec(z.slot_locked(slot), f"slot {slot} is locked (SlotLocked)")
            _exec(sc >> 12, f"slot {slot} WriteConfig {sc >> 12:#06b} forbids clear writes")
        end = min(off + n, SLOT_SIZES[slot])
        z.data[slot][off:end] = data[:end - off]
    chip.dirty = True


def lock(chip, p1, p2, data):
    _parse(data or p1 & 0x40 or p1 & 3 == 3, "Lock: mode bit 6 must be 0, zone 0-2, no data")
    z, what, summary = chip.zones, p1 & 3, p2.to_bytes(2, "little")
    if what == 0:
        _parse(p1 & 0x3C, "Lock config: slot bits must be 0")
        _exec(z.config_locked(), "the config zone is already locked")
        _exec(not p1 & 0x80 and crc16(z.config) != summary,
              f"config summary {summary.hex()} != CRC of the zone {crc16(z.config).hex()}")
        z.config[87] = LOCKED
    elif what == 1:
        _parse(p1 & 0x3C, "Lock data: slot bits must be 0")
        _need_config_lock(z, "locking the data zone")
        _exec(z.data_locked(), "the data zone is already locked")
        _exec(not p1 & 0x80 and z.data_summary() != summary,
              f"data summary {summary.hex()} != CRC of slots (private skipped) + OTP")
        z.config[86] = LOCKED
    else:  # one slot; the summary is ignored (calib_lock.c)
        slot = (p1 >> 2) & 0xF
        _exec(not z.data_locked(), "slot locks need the data zone locked")
        _exec(not z.key_config(slot) & 0x20, f"slot {slot} is not lockable (KeyConfig.Lockable)")
        _exec(z.slot_locked(slot), f"slot {slot} is already locked")
        z.lock_slot(slot)
    chip.dirty = True


def _rng(z):
    return os.urandom(32) if z.config_locked() else FIXED_RANDOM


def random(chip, p1, p2, data):
    _parse(p1 > 1 or p2 or data, "Random: mode 0 or 1, param2 0, no data")
    return _rng(chip.zones)


def nonce(chip, p1, p2, data):
    mode = p1 & 3
    _parse(mode == 2 or p1 & 0x1C, f"Nonce mode {p1:#04x} invalid")
    if mode == 3:  # pass-through: TempKey (or a 608 buffer) := NumIn, SourceFlag = Input
        _parse(p2 or len(data) != (64 if p1 & 0x20 else 32) or p1 & 0xC0 == 0xC0,
               "Nonce pass-through: 32 (64 with bit 5) bytes, param2 0, target 0/0x40/0x80")
        if p1 & 0xC0 == 0x00:
            chip.tempkey = TempKey(data, source_input=True)
        elif p1 & 0xC0 == 0x40:
            chip.msgdig = bytes(data)
        else:
            chip.altkey = bytes(data)
        return b"\x00"  # a single 0x00 byte (ATSHA204A DS Table 8-26)
    _parse(len(data) != 20 or p1 & 0xE0, "Nonce random mode: 20 bytes of NumIn")
    rand = _rng(chip.zones)
    digest = hashlib.sha256(rand + bytes(data) + bytes((0x16, p1, p2 & 0xFF))).digest()
    chip.tempkey = TempKey(digest)
    return rand


def genkey(chip, p1, p2, data):
    _parse(p1 & 0xE3 or data, "GenKey: mode bits 0-1 and 5-7 must be 0, no data")
    _exec(p1 & 0x18, "GenKey digest modes are not modeled")
    z = chip.zones
    _parse(p2 > 15 and not (p1 & 0x04 and p2 == 0xFFFF), f"GenKey slot {p2} > 15")
    _need_config_lock(z, "GenKey")
    if p2 == 0xFFFF:  # 608: an ephemeral private key into TempKey
        key = p256.new_private()
        chip.tempkey = TempKey(key, gen_key=True)
        return p256.public(key)
    _exec(not z.is_private(p2), f"slot {p2} is not a P-256 private key slot (KeyConfig)")
    if p1 & 0x04:
        # Before the data lock any private slot takes a key (how a factory fills a permanent
        # slot); after it SlotConfig.WriteConfig bit 13 must allow GenKey, slot not locked.
        if z.data_locked():
            _exec(not z.slot_config(p2) & 0x2000, f"slot {p2} forbids GenKey "
                                                   "(SlotConfig.WriteConfig bit 13 is 0)")
            _exec(z.slot_locked(p2), f"slot {p2} is locked (SlotLocked)")
        z.keys[p2] = p256.new_private()
        chip.dirty = True
    else:
        _exec(not z.key_config(p2) & 2, f"slot {p2}: KeyConfig.PubInfo is 0")
        _exec(p2 not in z.keys, f"slot {p2} holds no valid key")
    return p256.public(z.keys[p2])


def _message(chip, p1, what):
    """The 32-byte message of Sign/Verify: TempKey (consumed) or the message digest buffer."""
    if p1 & 0x20:
        _exec(chip.msgdig is None, f"{what}: the message digest buffer is empty")
        return chip.msgdig[:32]
    tk = chip.tempkey
    _exec(tk is None or tk.gen_key, f"{what}: TempKey is not valid (Nonce pass-through first)")
    chip.tempkey = None
    return tk.value[:32]


def sign(chip, p1, p2, data):
    _parse(p1 & 0x1E or data or p2 > 15, "Sign: mode bits 1-4 must be 0, slot 0-15, no data")
    _exec(not p1 & 0x80, "internal Sign (GenDig/GenKey messages) is not modeled")
    z = chip.zones
    _need_config_lock(z, "Sign")
    _exec(not z.is_private(p2), f"slot {p2} is not a P-256 private key slot")
    _exec(not z.slot_config(p2) & 1, f"slot {p2} forbids external signatures (SlotConfig bit 0)")
    _exec(p2 not in z.keys, f"slot {p2} holds no valid key (GenKey first)")
    return p256.sign(z.keys[p2], _message(chip, p1, "Sign"))


def verify(chip, p1, p2, data):
    _parse(p1 & 0x58, "Verify: mode bits 3, 4 and 6 must be 0")
    _exec(p1 & 0x87 != 0x02, "only Verify external (mode 0x02, no MAC) is modeled")
    _parse(p2 != 0x0004 or len(data) != 128, "Verify external: key type 0x0004, R||S||X||Y")
    try:
        good = p256.verify(data[64:], _message(chip, p1, "Verify"), data[:64])
    except p256.BadPoint:
        raise CmdError(EXEC, "the public key is not a P-256 point") from None
    if not good:
        raise CmdError(MISCOMPARE, "the signature does not verify")


def ecdh(chip, p1, p2, data):
    _parse(p1 & 0xF0 or len(data) != 64, "ECDH: mode bits 4-7 must be 0, X||Y (64 bytes)")
    z, copy = chip.zones, p1 & 0x0C
    _parse(p2 > 15 or (p1 & 1 and p2), "ECDH: slot 0-15 (param2 0 with the TempKey source)")
    _need_config_lock(z, "ECDH")
    _exec(p1 & 0x02, "encrypted ECDH output (IO protection key) is not modeled")
    _exec(copy == 0x04, "ECDH output to a slot (mode 0x04) is not modeled")
    if p1 & 1:  # source: the private key GenKey put in TempKey
        tk = chip.tempkey
        _exec(tk is None or not tk.gen_key, "TempKey holds no GenKey(0xFFFF) private key")
        chip.tempkey, key, to_slot = None, tk.value[:32], False
    else:
        sc = z.slot_config(p2)
        _exec(not z.is_private(p2), f"slot {p2} is not a P-256 private key slot")
        _exec(not sc & 0x04, f"slot {p2} forbids ECDH (SlotConfig bit 2)")
        _exec(p2 not in z.keys, f"slot {p2} holds no valid key")
        key, to_slot = z.keys[p2], copy == 0x00 and bool(sc & 0x08)
    clear = copy == 0x0C or (copy == 0x00 and not to_slot)
    _exec(clear and (z.u16(90) >> 8) & 3, "ChipOptions.ECDHProt forbids a clear ECDH output")
    try:
        secret = p256.ecdh(key, data)
    except p256.BadPoint:
        raise CmdError(EXEC, "the public key is not a P-256 point") from None
    if copy == 0x08:
        chip.tempkey = TempKey(secret)
        return None
    if to_slot:  # SlotConfig bit 3: the secret goes to slot n|1 (compatible mode)
        z.data[p2 | 1][:32] = secret
        chip.dirty = True
        return None
    return secret


def sha(chip, p1, p2, data):
    mode, target = p1 & 7, p1 & 0xC0
    _parse(p1 & 0x38 or target == 0x80, f"SHA mode {p1:#04x} invalid")
    if mode == 0:
        _parse(p2 or data, "SHA start takes no data")
        chip.sha = hashlib.sha256()
        return None
    _exec(mode not in (1, 2), f"SHA mode {mode} (HMAC, public key, context) is not modeled")
    _exec(chip.sha is None, "SHA update/end without a SHA start")
    if mode == 1:
        _parse(len(data) != 64 or p2 != 64, "SHA update takes exactly 64 bytes (param2 64)")
        chip.sha.update(data)
        return None
    _parse(len(data) != p2 or p2 > 64, "SHA end: 0-64 bytes, param2 = their length")
    chip.sha.update(data)
    digest, chip.sha = chip.sha.digest(), None
    if target == 0x00:
        chip.tempkey = TempKey(digest, source_input=True)
    elif target == 0x40:
        chip.msgdig = digest
    return digest


# opcode -> (name, max execution ms at the default clock, handler)
COMMANDS = {
    0x30: ("Info", 5, info), 0x02: ("Read", 5, read), 0x12: ("Write", 45, write),
    0x17: ("Lock", 35, lock), 0x1B: ("Random", 23, random), 0x16: ("Nonce", 20, nonce),
    0x40: ("GenKey", 115, genkey), 0x41: ("Sign", 115, sign), 0x45: ("Verify", 105, verify),
    0x43: ("ECDH", 75, ecdh), 0x47: ("SHA", 36, sha),
}
