# The emulated RTC: host clock + an offset (us) kept in <state>/rtc.bin, so it survives
# soft and hard resets but not a power cut (ESP-IDF "System Time": only power-up resets it).
import struct
import time as _t  # the unix port's own module, imported before start.py replaces "time"

_f = None  # file holding one little-endian int64: RTC minus host clock, in microseconds
_offset_us = 0


def install(f):
    """Use the open (r+b) file `f` as the RTC's battery-backed register."""
    global _f, _offset_us
    _f = f
    f.seek(0)
    raw = f.read(8)
    _offset_us = struct.unpack("<q", raw)[0] if raw and len(raw) == 8 else 0


def host_us():
    """The host's clock in microseconds since 1970 (the truth NTP would report)."""
    return _t.time_ns() // 1000


def now_us():
    """RTC time in microseconds since 1970-01-01 UTC (the unix port's epoch)."""
    return host_us() + _offset_us


def set_us(t_us):
    """Set the RTC to `t_us` microseconds since 1970 and persist it at once."""
    global _offset_us
    _offset_us = t_us - host_us()
    if _f is not None:
        _f.seek(0)
        _f.write(struct.pack("<q", _offset_us))


def days_from_civil(y, m, d):
    """Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def seconds(y, mo, d, h, mi, s):
    """Seconds since 1970 (UTC) for a date and time; independent of the host's TZ.

    Out-of-range fields roll over, as timeutils_mktime() does on the ESP32 port."""
    y += (mo - 1) // 12
    mo = (mo - 1) % 12 + 1
    return ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + s


def gmtime8(secs):
    """An ESP32-style 8-tuple (year, month, mday, hour, minute, second, weekday, yearday)."""
    return tuple(_t.gmtime(secs)[:8])
