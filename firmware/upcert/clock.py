# Wall clock with a notion of trust: an unset RTC (ESP32 boots at 2000-01-01) must not be used
# to judge certificate validity. Seconds are always in the running port's own epoch.
import time

from upcert.errors import ClockNotSetError

# Firmware build date: any clock reading before it is certainly wrong.
BUILD_DATE = (2026, 11, 1)

_epoch_days = None


def _days(y, m, d):
    # Days from 0000-03-01 in the proleptic Gregorian calendar (H. Hinnant, "days_from_civil").
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + 9 if m <= 2 else m - 3) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy


def utc_seconds(t):
    """(y, m, d[, H, M, S]) in UTC -> seconds in this port's epoch (1970 unix, 2000 ESP32).

    The epoch comes from time.gmtime(0) of the running port, so nothing is hard-coded; unlike
    time.mktime on the unix port this ignores TZ (mktime there is local time).
    """
    global _epoch_days
    if _epoch_days is None:
        e = time.gmtime(0)
        _epoch_days = _days(e[0], e[1], e[2])
    s = (_days(t[0], t[1], t[2]) - _epoch_days) * 86400
    if len(t) > 3:
        s += t[3] * 3600 + t[4] * 60 + t[5]
    return s


def iso(t):
    """Seconds (port epoch) -> 'YYYY-MM-DDTHH:MM:SSZ'."""
    g = time.gmtime(int(t))
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % g[:6]


class Clock:
    """now()/trusted()/sync(); time_fn defaults to time.time, sync_fn is NTP (may raise OSError).

    min_valid (seconds, port epoch) defaults to BUILD_DATE, converted when it is used.
    """

    def __init__(self, time_fn=None, sync_fn=None, min_valid=None):
        self._time = time_fn or time.time
        self._sync = sync_fn
        self._min = min_valid

    def min_valid(self):
        """Earliest trusted reading, seconds in the port epoch."""
        return utc_seconds(BUILD_DATE) if self._min is None else self._min

    def now(self):
        """Current time, seconds in the port epoch."""
        return self._time()

    def trusted(self):
        """True when the clock reads at least min_valid (so it has been set)."""
        return self.now() >= self.min_valid()

    def sync(self):
        """Run sync_fn (NTP; OSError propagates) and return trusted()."""
        if self._sync:
            self._sync()
        return self.trusted()

    def require_trusted(self):
        """Raise ClockNotSetError unless trusted(); returns now() otherwise."""
        t = self.now()
        m = self.min_valid()
        if t < m:
            raise ClockNotSetError(
                "clock not set (reads %s, before firmware build date %s): sync NTP first"
                % (iso(t), iso(m)[:10])
            )
        return t

    def iso(self, t=None):
        """'YYYY-MM-DDTHH:MM:SSZ' for t (default now())."""
        return iso(self.now() if t is None else t)
