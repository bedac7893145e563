"""An emulated ATECC608 on an I2C bus, written from the data sheet (not from upcert's driver):
wake/idle/sleep and the watchdog, the I/O buffer, CRC-checked command packets, execution
times (NACK while busy), fault injection and a state file that survives reboots.

Bus interface (what i2c_bridge.py calls): `address`, `wake_pulse(low_us)`,
`i2c_write(data, freq_hz) -> ack`, `i2c_read(n, freq_hz) -> bytes | None (NACK)`,
`control(dict) -> dict`. Commands live in atecc_commands.py, the zones in atecc_zones.py.
"""

import threading
import time
from collections import deque
from pathlib import Path

from upcert.emu import atecc_zones
from upcert.emu.atecc_commands import COMM, COMMANDS, PARSE, WAKE, WATCHDOG, CmdError
from upcert.emu.atecc_zones import crc16
from upcert.errors import UpcertError

WAKE_LOW_US = 60  # tWLO: SDA low at least 60 us wakes the chip (data sheet, "Wake")
WAKE_DELAY_S = 0.0015  # tWHI: the chip answers 1500 us after the wake pulse
MAX_FREQ_HZ = 1000000  # the 608's I2C interface runs up to 1 MHz
FAULTS = ("crc", "nack", "nowake", "watchdog", "busy_ms", "clear")
_TRACE_MAX = 1000  # commands traced after arm_cut(); the rest are only counted


def frame(payload):
    """Response packet: count (payload + 3) | payload | CRC-16 LE."""
    body = bytes((len(payload) + 3,)) + bytes(payload)
    return body + crc16(body)


class Atecc608:
    """One chip. `zones` (atecc_zones.Zones) is its EEPROM; `path` the state file written on
    every EEPROM change (None: nothing persists); `clock` returns seconds (tests inject one)."""

    def __init__(self, zones=None, *, path=None, clock=time.monotonic):
        self.zones = zones if zones is not None else atecc_zones.new_zones("blank")
        self.path = Path(path) if path else None
        self._clock, self._lock = clock, threading.RLock()
        self.faults = {"crc": 0, "nack": 0, "nowake": 0, "busy_ms": 0}
        self.history = deque(maxlen=32)  # (command, status, reason) of the latest commands
        self.last_error = ""
        self.dirty = False
        # Power-cut injection (arm_cut): commands counted since armed, the armed count (0: off),
        # their trace, and the cut itself: on_cut() asks the board's host process to cut the
        # power; until it has, the bridge answers nothing (the board never sees the reply).
        self.counted, self.cut_after, self.trace = 0, 0, []
        self.on_cut = None  # set by the board's host process
        self.stamp = None  # () -> the board's flash writes so far (traced with each command)
        self.cut_pending = False
        self.power_cycle()

    @classmethod
    def open(cls, path, layout="blank", *, seed="", address=None, clock=time.monotonic):
        """The chip whose state is in `path`, or a new `layout` chip saved there. A chip does
        not change its layout: a file holding another layout is an error naming the fix."""
        path = Path(path)
        if path.exists():
            zones = atecc_zones.load(path)
            if zones.layout != layout:
                raise UpcertError(f"{path} holds a {zones.layout!r} ATECC608 but {layout!r} "
                                  f"was asked for: delete {path} to fit a new chip")
        else:
            zones = atecc_zones.new_zones(layout, seed=seed, address=address)
            atecc_zones.save(zones, path)
        return cls(zones, path=path, clock=clock)

    # -- power and sleep states ----------------------------------------------------------------
    def power_cycle(self):
        """Power lost and back: asleep, volatile state gone, address re-read from the EEPROM."""
        with self._lock:
            self.cut_pending = False
            self._sleep()

    def _sleep(self):
        self.state = "sleep"
        self.tempkey = self.msgdig = self.altkey = self.sha = None
        self.out, self.out_pos, self.ready_at, self.wd_deadline = b"", 0, 0.0, 0.0
        self.address = self.zones.address()  # a new address applies after sleep (§2.2.1)

    def _tick(self, now):
        if self.state == "awake" and now >= self.wd_deadline:
            self._sleep()  # the watchdog put the chip to sleep: TempKey is lost

    def wake_pulse(self, low_us):
        """SDA held low for `low_us` (a write to address 0): wakes a sleeping or idle chip."""
        with self._lock:
            now = self._clock()
            self._tick(now)
            if self.state == "awake" or low_us < WAKE_LOW_US:
                return
            if self.faults["nowake"]:
                self.faults["nowake"] -= self.faults["nowake"] > 0  # -1: never wakes
                return
            self.state = "awake"
            self.wd_deadline = now + self.zones.watchdog_s()
            self.ready_at = now + WAKE_DELAY_S
            self._respond(frame(bytes((WAKE,))))

    # -- the bus ---------------------------------------------------------------------------------
    def _acks(self, freq_hz):
        now = self._clock()
        self._tick(now)
        if self.faults["nack"]:
            self.faults["nack"] -= 1
            return False
        return self.state == "awake" and now >= self.ready_at and 0 < freq_hz <= MAX_FREQ_HZ

    def i2c_write(self, data, freq_hz):
        """A write to this chip: word address (0 reset, 1 sleep, 2 idle, 3 command) + bytes.
        False is a NACK (asleep, busy, or a bad word address)."""
        with self._lock:
            if not self._acks(freq_hz):
                return False
            if not data:
                return True  # an address probe (scan, polling)
            word = data[0]
            if word == 0x00:
                self.out_pos = 0  # reset the I/O buffer address counter
            elif word == 0x01:
                self._sleep()
            elif word == 0x02:
                self.state = "idle"  # keeps TempKey; the watchdog stops
            elif word == 0x03:
                self._command(bytes(data[1:]))
            else:
                return False
            return True

    def i2c_read(self, n, freq_hz):
        """Read n bytes of the I/O buffer from the address counter on (0xFF past its end);
        None is a NACK."""
        with self._lock:
            if not self._acks(freq_hz):
                return None
            out = self.out[self.out_pos:self.out_pos + n]
            self.out_pos += len(out)
            return out + b"\xff" * (n - len(out))

    def _respond(self, packet, busy_s=0.0):
        if self.faults["crc"]:
            self.faults["crc"] -= 1
            packet = packet[:-1] + bytes((packet[-1] ^ 0xA5,))
        self.out, self.out_pos = packet, 0
        self.ready_at = max(self.ready_at, self._clock() + busy_s)

    def _command(self, pkt):
        name, status, why, busy_s = "?", None, "", 0.0
        p1 = p2 = None
        saved = False
        if len(pkt) < 7 or pkt[0] != len(pkt) or crc16(pkt[:-2]) != pkt[-2:]:
            status, why = COMM, f"bad count or CRC in {pkt.hex()}"
        else:
            opcode, p1, p2, data = pkt[1], pkt[2], pkt[3] | pkt[4] << 8, pkt[5:-2]
            name, exec_ms, handler = COMMANDS.get(opcode, (f"{opcode:#04x}", 0, None))
            busy_s = (exec_ms + self.faults["busy_ms"]) / 1000
            if handler is None:
                status, why = PARSE, f"opcode {opcode:#04x} unknown or not modeled"
            elif self._clock() + busy_s > self.wd_deadline:
                status, why = WATCHDOG, "the watchdog would expire during the command"
            else:
                try:
                    payload = handler(self, p1, p2, data)
                except CmdError as e:
                    status, why = e.status, e.why
                    busy_s = 0 if e.status == PARSE else busy_s
                else:
                    saved = self.dirty
                    self._save()
                    self._respond(frame(payload) if payload is not None else frame(b"\x00"),
                                  busy_s)
        if status is not None:
            self.last_error = f"{name}: {why}"
            self._respond(frame(bytes((status,))), busy_s if status not in (COMM, PARSE,
                                                                             WATCHDOG) else 0)
        self.history.append((name, 0 if status is None else status, why))
        self._count(name, p1, p2, status, saved)

    def _count(self, name, p1, p2, status, saved):
        # One command ran (whatever its status): traced, and the armed power cut after it.
        self.counted += 1
        if len(self.trace) < _TRACE_MAX:
            self.trace.append({"n": self.counted, "cmd": name, "p1": p1, "p2": p2,
                               "status": status or 0, "eeprom": saved,
                               "writes": self.stamp() if self.stamp else None})
        if self.cut_after and self.counted >= self.cut_after:
            self.cut_after, self.cut_pending = 0, True
            if self.on_cut:
                self.on_cut()

    def _save(self):
        if self.dirty and self.path is not None:
            atecc_zones.save(self.zones, self.path)
        self.dirty = False

    # -- test hooks --------------------------------------------------------------------------
    def inject(self, fault, count=1, ms=0):
        """Fault injection: "crc" corrupts the CRC of the next `count` responses; "nack" NACKs
        the next `count` transfers; "nowake" ignores `count` wake pulses (-1: forever);
        "watchdog" fires the watchdog `ms` from now (0: at once); "busy_ms" adds `ms` to every
        command's execution time; "clear" removes them all."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: use one of {', '.join(FAULTS)}")
        if not isinstance(count, int) or not isinstance(ms, (int, float)) or ms < 0:
            raise ValueError("count must be an int and ms a number >= 0")
        with self._lock:
            if fault == "clear":
                self.faults = dict.fromkeys(self.faults, 0)
            elif fault == "watchdog":
                if self.state == "awake":
                    self.wd_deadline = self._clock() + ms / 1000
                    self._tick(self._clock())
            elif fault == "busy_ms":
                self.faults["busy_ms"] = ms
            else:
                self.faults[fault] = count

    def arm_cut(self, commands):
        """Cut the power right after the `commands`-th command from now (0: never). Either way
        the count and the trace start again."""
        if not isinstance(commands, int) or isinstance(commands, bool) or commands < 0:
            raise ValueError(f"cut_after_commands {commands!r}: a number of commands >= 0")
        with self._lock:
            self.counted, self.cut_after, self.trace = 0, commands, []

    def control(self, obj):
        """The bridge's control requests: {"fault": NAME, "count": N, "ms": M},
        {"cut_after_commands": N} (arm_cut), {"query": "state"} or {"query": "commands"}
        ({"count", "armed", "trace": [{"n", "cmd", "p1", "p2", "status", "eeprom": the EEPROM
        changed, "writes": the board's flash writes before it}]}). Returns a JSON-able dict
        ({"error": ...} when refused)."""
        if not isinstance(obj, dict):
            return {"error": "a control request is a JSON object"}
        try:
            if "fault" in obj:
                default = -1 if obj["fault"] == "nowake" else 1
                self.inject(obj["fault"], obj.get("count", default), obj.get("ms", 0))
                return {"ok": True}
            if "cut_after_commands" in obj:
                self.arm_cut(obj["cut_after_commands"])
                return {"ok": True}
            if obj.get("query") == "state":
                return self.describe()
            if obj.get("query") == "commands":
                with self._lock:
                    return {"count": self.counted, "armed": self.cut_after,
                            "trace": list(self.trace)}
        except ValueError as e:
            return {"error": str(e)}
        return {"error": 'use {"fault": ...}, {"cut_after_commands": N} or {"query": "state" or '
                         '"commands"}'}

    def describe(self):
        """What a test may want to see: serial, locks, slots with keys, sleep state, whether a
        command still runs ("busy": the chip NACKs until it ends), faults, the last error's
        reason. Never a key."""
        z = self.zones
        with self._lock:
            now = self._clock()
            self._tick(now)
            return {"serial": (bytes(z.config[0:4]) + bytes(z.config[8:13])).hex(),
                    "revision": bytes(z.config[4:8]).hex(), "address": self.address,
                    "layout": z.layout, "config_locked": z.config_locked(),
                    "data_locked": z.data_locked(), "key_slots": sorted(z.keys),
                    "locked_slots": [n for n in range(16) if z.slot_locked(n)],
                    "state": self.state, "busy": self.state == "awake" and now < self.ready_at,
                    "tempkey_valid": self.tempkey is not None,
                    "faults": dict(self.faults), "last_error": self.last_error}
