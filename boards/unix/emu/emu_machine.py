# `machine` stand-in for the emulated ESP32: resets through the host process, the reset cause,
# unique_id, the RTC, a minimal Pin, and I2C wired to the host's emulated devices (emu_i2c.py).
# Names and errors follow ports/esp32/modmachine.c and machine_*.c.
import emu_host
import emu_rtc
import machine as _m  # the unix port's own module, imported before start.py replaces it
from micropython import const

PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)

mem8 = _m.mem8
mem16 = _m.mem16
mem32 = _m.mem32
Signal = _m.Signal
time_pulse_us = _m.time_pulse_us
idle = _m.idle

_cause = PWRON_RESET
_uid = b"\x24\x0a\xc4\x00\x00\x01"
_freq = 160000000  # CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ_160, the ESP32 port's default
_soft = False


def configure(reset_cause, unique_id):
    """Set by emu_boot: this boot's cause (from the host) and the board's 6-byte id."""
    global _cause, _uid
    _cause, _uid = reset_cause, unique_id


def reset():
    """Hard reset (esp_restart): the host restarts the interpreter; never returns."""
    emu_host.request(b"hard")
    emu_host.halt()


def bootloader():
    """Enter the ROM download mode: the board waits there until a power cut."""
    emu_host.request(b"bootloader")
    emu_host.halt()


def soft_reset():
    """Soft reset: raise SystemExit, which ends the interpreter (and reboots the board)."""
    global _soft
    _soft = True
    raise SystemExit


def soft_reset_requested():
    """True once soft_reset() ran in this interpreter (a plain sys.exit() does not reboot)."""
    return _soft


def reset_cause():
    """Cause of the last chip reset. machine.reset() reads as SOFT_RESET (esp_restart is
    SW_CPU_RESET on an ESP32); a soft reboot does not change it."""
    return _cause


def unique_id():
    """6 bytes, the board's base MAC: an Espressif OUI plus 3 bytes from the state dir."""
    return _uid


def freq(hz=None):
    """CPU frequency in Hz; setting accepts 20, 40, 80, 160 or 240 MHz."""
    global _freq
    if hz is None:
        return _freq
    if hz // 1000000 not in (20, 40, 80, 160, 240):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq = hz // 1000000 * 1000000


def lightsleep(time_ms=0):
    """Sleep with the CPU halted; the emulated board just sleeps."""
    import time

    time.sleep_ms(time_ms)


sleep = lightsleep


def deepsleep(time_ms=0):
    """Deep sleep: the host powers the core down and boots it after time_ms (0: forever)."""
    emu_host.request(b"deepsleep:%d" % time_ms)
    emu_host.halt()


class WDT:
    """Task watchdog: the host resets the board (WDT_RESET) when feed() comes too late."""

    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("WDT timeout too short")
        emu_host.request(b"wdt:%d" % timeout)

    def feed(self):
        emu_host.request(b"feed")


class RTC:
    """The real-time clock (emu_rtc): datetime() gets or sets it, like the ESP32 port."""

    def datetime(self, dt=None):
        if dt is None:
            us = emu_rtc.now_us()
            tm = emu_rtc.gmtime8(us // 1000000)
            # (year, month, day, weekday, hours, minutes, seconds, subseconds in us)
            return (tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], us % 1000000)
        if len(dt) != 8:
            raise ValueError("requested length 8 but object has length %d" % len(dt))
        secs = emu_rtc.seconds(dt[0], dt[1], dt[2], dt[4], dt[5], dt[6])
        emu_rtc.set_us(secs * 1000000 + dt[7])

    def init(self, dt):
        self.datetime(dt)


# ESP32 GPIOs that exist (datasheet §2.2; 20, 24, 28-31 are not bonded out); 34-39 input only.
_PINS = tuple(range(0, 20)) + (21, 22, 23, 25, 26, 27) + tuple(range(32, 40))


class Pin:
    """Minimal Pin: enough for board code to build pins and set or read a level."""

    IN = const(1)
    OUT = const(3)
    OPEN_DRAIN = const(7)
    PULL_UP = const(2)
    PULL_DOWN = const(1)
    IRQ_RISING = const(1)
    IRQ_FALLING = const(2)

    def __init__(self, id, mode=-1, pull=-1, *, value=None):
        if id not in _PINS:
            raise ValueError("invalid pin")
        if mode in (Pin.OUT, Pin.OPEN_DRAIN) and id >= 34:
            raise ValueError("pin can only be input")
        self._id, self._mode, self._pull = id, mode, pull
        self._v = 1 if pull == Pin.PULL_UP else 0
        if value is not None:
            self._v = 1 if value else 0

    def init(self, mode=-1, pull=-1, *, value=None):
        self.__init__(self._id, mode, pull, value=value)

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0

    __call__ = value

    def on(self):
        self._v = 1

    def off(self):
        self._v = 0

    def irq(self, handler=None, trigger=3):
        return None

    def __repr__(self):
        return "Pin(%d)" % self._id


# The emulated I2C wires: None (nothing attached: every transfer NACKs) or emu_i2c's bridge to
# the host's device emulators (the ATECC608), with writeto(addr, buf, stop, freq),
# readfrom_into(addr, buf, stop, freq) and scan(freq).
_bus = None


def attach_bus(bus):
    """Called by emu_i2c.connect(): transfers go to the host's emulated devices."""
    global _bus
    _bus = bus


class I2C:
    """I2C controller 0 or 1. A device that does not acknowledge (none attached, asleep, busy)
    fails like on an ESP32: OSError(19) (ENODEV); a bus timeout is OSError(ETIMEDOUT)."""

    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in (0, 1):
            raise ValueError("I2C(%s) doesn't exist" % id)
        self._id, self.scl, self.sda, self.freq = id, scl, sda, freq

    def init(self, *, scl=None, sda=None, freq=400000, timeout=50000):
        self.__init__(self._id, scl=self.scl if scl is None else scl,
                      sda=self.sda if sda is None else sda, freq=freq, timeout=timeout)

    def scan(self):
        return _bus.scan(self.freq) if _bus is not None else []

    def writeto(self, addr, buf, stop=True):
        if _bus is None:
            raise OSError(19)  # ENODEV: the address was not acknowledged
        _bus.writeto(addr, buf, stop, self.freq)
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        return self.writeto(addr, b"".join(bytes(b) for b in vector), stop)

    def readfrom_into(self, addr, buf, stop=True):
        if _bus is None:
            raise OSError(19)
        _bus.readfrom_into(addr, buf, stop, self.freq)

    def readfrom(self, addr, nbytes, stop=True):
        buf = bytearray(nbytes)
        self.readfrom_into(addr, buf, stop)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self.writeto(addr, bytes([memaddr & 0xFF]) + bytes(buf))

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        self.writeto(addr, bytes([memaddr & 0xFF]), False)
        self.readfrom_into(addr, buf)

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)


class SoftI2C(I2C):
    """Bit-banged I2C: same emulated bus (no id argument)."""

    def __init__(self, scl=None, sda=None, *, freq=400000, timeout=50000):
        I2C.__init__(self, 0, scl=scl, sda=sda, freq=freq, timeout=timeout)
