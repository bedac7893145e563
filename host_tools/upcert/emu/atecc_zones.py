"""ATECC608 emulator, part 1: the EEPROM zones (config, OTP, data), their factory layouts,
the CRC-16, the slot/key configuration bits and the one-file persistence of a chip.

Sources: ATECC608A/B "Complete data sheet" Table 2-5 (config zone map) and sections 2.2.1-2.2.5
(SlotConfig, KeyConfig); Microchip cryptoauthlib (`lib/calib/calib_command.h`, `calib_lock.c`);
the ATECC608B-TNGTLS data sheet section 2.2 (Trust&Go slot policies). See atecc.py for the
bus and the commands, and boards/unix/README.md for where the emulator differs from a chip.
"""

import hashlib
import json
import os
from pathlib import Path

from upcert.errors import UpcertError

CONFIG_SIZE, OTP_SIZE = 128, 64
# Data zone: slots 0-7 hold 36 bytes, slot 8 416 bytes, slots 9-15 72 bytes (datasheet §2.2).
SLOT_SIZES = (36,) * 8 + (416,) + (72,) * 7
LOCKED, UNLOCKED = 0x00, 0x55  # LockValue (86) / LockConfig (87) encodings
REVISIONS = {"608A": bytes.fromhex("00006002"), "608B": bytes.fromhex("00006003")}
LAYOUTS = ("blank", "tng")
DEFAULT_ADDRESS = {"blank": 0x60, "tng": 0x35}  # 7-bit; config byte 16 holds address << 1

# Factory defaults of a blank part (config unlocked): the ATECC508A/608A data sheet "default
# value" column of the config map, which matches what blank 608A parts read back (SlotConfig
# 0x2083 0x2087 0x208F 0x8FC4 ..., KeyConfig 0x0033 x3, 0x001C x5, 0x003C x7, 0x001C).
_BLANK_SLOT_CONFIG = (0x2083, 0x2087, 0x208F, 0x8FC4, 0x8F8F, 0x8F8F, 0x8F9F, 0x8FAF,
                      0x0000, 0x0000, 0x0000, 0x0000, 0x0000, 0x0000, 0x0000, 0x8FAF)
_BLANK_KEY_CONFIG = (0x0033,) * 3 + (0x001C,) * 5 + (0x003C,) * 7 + (0x001C,)
# Trust&Go-style (TNGTLS) layout, config and data locked at the factory. Slots 0, 2-4 and 8
# are the values of the shared contract (TNGTLS data sheet §2.2.4: slot 0 permanent primary key,
# "random nonce required", ext sign + ECDH, secret; slots 2-4 GenKey until slot-locked; slot 8
# general data). The others only approximate TNGTLS: 1 internal-sign key, 5 and 10-12 clear
# read-only data (certificates on a real part; zeros here), 6, 7, 9 secret never-written data.
_TNG_SLOT_CONFIG = (0x0087, 0x0082, 0x2087, 0x2087, 0x2087, 0x8000, 0x8080, 0x8080,
                    0x0000, 0x8080, 0x8000, 0x8000, 0x8000, 0x0000, 0x0000, 0x0000)
_TNG_KEY_CONFIG = (0x0053, 0x0053, 0x0073, 0x0073, 0x0073) + (0x001C,) * 11
_TNG_KEY_SLOTS = (0, 1, 2, 3, 4)  # keys made at the factory (GenKey before the data lock)


def crc16(data):
    """ATECC CRC-16 (poly 0x8005, init 0, data bits LSB first, no final xor) as 2 bytes LE:
    crc16(b"\\x04\\x11") == b"\\x33\\x43" (cryptoauthlib atCRC, calib_command.c)."""
    crc = 0
    for byte in data:
        for bit in range(8):
            if ((byte >> bit) & 1) ^ (crc >> 15):
                crc = ((crc << 1) ^ 0x8005) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return bytes((crc & 0xFF, crc >> 8))


def serial_for(seed):
    """A stable 9-byte serial of the right shape (01 23 .. .. .. .. .. .. EE) from a seed."""
    h = hashlib.sha256(b"upcert-atecc608:" + str(seed).encode()).digest()
    return b"\x01\x23" + h[:6] + b"\xee"


def factory_config(layout, serial, address, revision):
    """The 128-byte config zone of a new part (Table 2-5 offsets)."""
    cfg = bytearray(CONFIG_SIZE)
    cfg[0:4], cfg[4:8], cfg[8:13] = serial[0:4], REVISIONS[revision], serial[4:9]
    cfg[13] = 0x01  # 608: AES_Enable
    cfg[14] = 0x01  # I2C_Enable bit 0: I2C (0 would be the single-wire interface)
    cfg[16] = address << 1
    cfg[52:68] = b"\xff\xff\xff\xff\x00\x00\x00\x00" * 2  # Counter0/1 factory values
    cfg[86], cfg[87] = UNLOCKED, UNLOCKED
    cfg[88:90] = b"\xff\xff"  # SlotLocked: no slot locked
    slots, keys = (_BLANK_SLOT_CONFIG, _BLANK_KEY_CONFIG) if layout == "blank" else \
        (_TNG_SLOT_CONFIG, _TNG_KEY_CONFIG)
    for n in range(16):
        cfg[20 + 2 * n:22 + 2 * n] = slots[n].to_bytes(2, "little")
        cfg[96 + 2 * n:98 + 2 * n] = keys[n].to_bytes(2, "little")
    if layout == "tng":
        cfg[86], cfg[87] = LOCKED, LOCKED
    return cfg


class Zones:
    """The chip's non-volatile memory: config, OTP, data slots and the private keys (held apart
    from the data bytes; a private slot is never readable anyway)."""

    def __init__(self, layout, config, otp=None, data=None, keys=None):
        self.layout = layout
        self.config = bytearray(config)
        self.otp = bytearray(otp if otp is not None else OTP_SIZE)
        self.data = [bytearray(d) for d in data] if data else \
            [bytearray(size) for size in SLOT_SIZES]
        self.keys = dict(keys or {})  # slot -> 32-byte private scalar (big-endian)

    # -- config fields (Table 2-5) -----------------------------------------------------------
    def u16(self, offset):
        return self.config[offset] | self.config[offset + 1] << 8

    def slot_config(self, n):
        return self.u16(20 + 2 * n)

    def key_config(self, n):
        return self.u16(96 + 2 * n)

    def config_locked(self):
        return self.config[87] != UNLOCKED

    def data_locked(self):
        return self.config[86] != UNLOCKED

    def slot_locked(self, n):
        return not (self.u16(88) >> n) & 1  # bit n = 0: slot n locked

    def lock_slot(self, n):
        value = self.u16(88) & ~(1 << n)
        self.config[88:90] = value.to_bytes(2, "little")

    def is_private(self, n):
        """KeyConfig.Private with KeyType P-256 (bits 2-4 = 0b100)."""
        kc = self.key_config(n)
        return bool(kc & 1) and (kc >> 2) & 7 == 4

    def address(self):
        """7-bit I2C address, or None in single-wire mode. On the 608, ChipMode bit 0 selects
        UserExtraAdd (byte 85) when it is non-zero; else I2C_Address (byte 16)."""
        if not self.config[14] & 1:
            return None
        if self.config[19] & 1 and self.config[85]:
            return self.config[85] >> 1
        return self.config[16] >> 1

    def watchdog_s(self):
        """ChipMode bit 2: 0 short watchdog (~1.3 s), 1 long (~13 s) (calib_command.h)."""
        return 13.0 if self.config[19] & 0x04 else 1.3

    def data_summary(self):
        """The data-zone Lock summary: CRC over slots 0-15 in order, then OTP, skipping
        private-key slots (KeyConfig.Private = 1), as cryptoauthlib calib_lock.c documents."""
        parts = [bytes(self.data[n]) for n in range(16) if not self.key_config(n) & 1]
        return crc16(b"".join(parts) + bytes(self.otp))

    # -- persistence -------------------------------------------------------------------------
    def to_json(self):
        return {"version": 1, "layout": self.layout, "config": self.config.hex(),
                "otp": self.otp.hex(), "data": [d.hex() for d in self.data],
                "keys": {str(k): v.hex() for k, v in sorted(self.keys.items())}}

    @classmethod
    def from_json(cls, obj, where):
        try:
            zones = cls(obj["layout"], bytes.fromhex(obj["config"]), bytes.fromhex(obj["otp"]),
                        [bytes.fromhex(d) for d in obj["data"]],
                        {int(k): bytes.fromhex(v) for k, v in obj["keys"].items()})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UpcertError(f"{where} is not an emulated ATECC608 state file ({e!r}); "
                              "delete it to fit a new blank chip") from None
        sizes = [len(d) for d in zones.data]
        if (len(zones.config), len(zones.otp), tuple(sizes)) != (CONFIG_SIZE, OTP_SIZE,
                                                                  SLOT_SIZES) or \
                any(len(k) != 32 or not 0 <= s < 16 for s, k in zones.keys.items()):
            raise UpcertError(f"{where}: zone sizes are wrong; delete it to fit a new chip")
        return zones


def new_zones(layout="blank", *, seed="", address=None, revision=None):
    """A factory-fresh chip: "blank" (0x60, config unlocked) or "tng" (0x35, locked, keys in
    slots 0-4). The private keys of the tng layout come from the OS RNG, as on a part."""
    if layout not in LAYOUTS:
        raise UpcertError(f"ATECC608 layout {layout!r} unknown: use one of {', '.join(LAYOUTS)}")
    address = DEFAULT_ADDRESS[layout] if address is None else address
    if not isinstance(address, int) or not 0x08 <= address <= 0x77:
        raise UpcertError(f"ATECC608 address {address!r} must be a 7-bit address 8-119 "
                          "(0x60 blank, 0x35 Trust&Go)")
    revision = revision or ("608A" if layout == "blank" else "608B")
    zones = Zones(layout, factory_config(layout, serial_for(seed), address, revision))
    if layout == "tng":
        from upcert.emu import atecc_crypto

        for slot in _TNG_KEY_SLOTS:
            zones.keys[slot] = atecc_crypto.new_private()
    return zones


def save(zones, path):
    """Write the chip state atomically (tmp file, mode 0600, then os.replace): it holds the
    emulated chip's private keys, which never leave the host and are never printed."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(zones.to_json(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path):
    """The chip state in `path` (an UpcertError names the file when it is unreadable)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UpcertError(f"cannot read emulated ATECC608 state {path}: {e}; delete it to fit "
                          "a new chip") from None
    if not isinstance(obj, dict):
        raise UpcertError(f"{path} must hold a JSON object; delete it to fit a new chip")
    return Zones.from_json(obj, path)
