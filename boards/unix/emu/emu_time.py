# Stand-in for `time` on the emulated board: the built-in functions, except that time(),
# time_ns(), gmtime() and localtime() read the emulated RTC (emu_rtc) and return ESP32 shapes.
# The epoch stays the unix port's 1970 (an ESP32 counts from 2000): convert via mktime/gmtime.
import time as _t  # the unix port's own module, imported before start.py replaces "time"

import emu_rtc

sleep = _t.sleep
sleep_ms = _t.sleep_ms
sleep_us = _t.sleep_us
ticks_ms = _t.ticks_ms
ticks_us = _t.ticks_us
ticks_cpu = _t.ticks_cpu
ticks_add = _t.ticks_add
ticks_diff = _t.ticks_diff


def time():
    """Seconds since 1970-01-01 UTC by the emulated RTC, as an int (like the ESP32 port)."""
    return emu_rtc.now_us() // 1000000


def time_ns():
    """Nanoseconds since 1970-01-01 UTC by the emulated RTC."""
    return emu_rtc.now_us() * 1000


def gmtime(secs=None):
    """(year, month, mday, hour, minute, second, weekday, yearday) in UTC; default: now."""
    return emu_rtc.gmtime8(time() if secs is None else int(secs))


def localtime(secs=None):
    """Same as gmtime(): the ESP32 port has no time zones."""
    return gmtime(secs)


def mktime(t):
    """Inverse of localtime(): seconds since 1970 for an 8- or 9-tuple, always UTC."""
    if len(t) not in (8, 9):
        raise TypeError("mktime needs a tuple of length 8 or 9")
    return emu_rtc.seconds(t[0], t[1], t[2], t[3], t[4], t[5])
