# `ntptime` stand-in (micropython-lib ntptime API: host, timeout, time(), settime()). Instead
# of asking an NTP server it reads the host's clock; board.json "ntp": "unreachable" makes it
# time out after `timeout` seconds the way a board without a route to the server does.
import errno
import time as _t  # the unix port's own module, imported before start.py replaces "time"

import emu_rtc

host = "pool.ntp.org"
timeout = 1
_reachable = True


def configure(reachable):
    """Set by emu_boot from board.json ("ntp": "ok" | "unreachable")."""
    global _reachable
    _reachable = reachable


def time():
    """Seconds since the port's epoch (1970 on the emulated board) from 'NTP' (the host)."""
    if not _reachable:
        _t.sleep(timeout)
        # errno.ETIMEDOUT is 110 here; an ESP32 (newlib) reports 116: compare with
        # errno.ETIMEDOUT, never a number.
        raise OSError(errno.ETIMEDOUT)
    return emu_rtc.host_us() // 1000000


def settime():
    """Set the emulated RTC from 'NTP' (whole seconds, UTC), like ntptime.settime()."""
    emu_rtc.set_us(time() * 1000000)
