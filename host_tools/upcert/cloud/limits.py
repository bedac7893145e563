"""The stand-in's quotas and durations: token buckets as AWS throttles its APIs, and validity
periods written as "90s", "10m", "12h", "365d"."""

import datetime
import re
import time

from upcert.errors import UpcertError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SettingError(UpcertError):
    """A quota or a duration of the stand-in's settings is not valid."""


class Throttle:
    """Token buckets, one per key (a thing): rate requests per second, at most burst in a row,
    as AWS throttles its APIs; allow(key) takes a token or says no. clock: seconds (monotonic)."""

    def __init__(self, rate, burst, clock=time.monotonic):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0 or \
                isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise SettingError(f"CreateCertificateFromCsr quota {rate!r}/s, burst {burst!r}"
                                    " is not valid: give a rate > 0 (requests per second per "
                                    "thing) and a whole burst >= 1")
        self.rate, self.burst, self.clock = float(rate), burst, clock
        self._buckets = {}  # key -> (tokens, at)

    def allow(self, key):
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if len(self._buckets) > 10000:  # a full bucket is a new one: forget those
            full = self.burst / self.rate
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
        ok = tokens >= 1
        self._buckets[key] = (tokens - 1 if ok else tokens, now)
        return ok

    def retry_after(self, key):
        """Seconds until key has a token again (0 when it has one)."""
        tokens, at = self._buckets.get(key, (self.burst, self.clock()))
        tokens = min(self.burst, tokens + (self.clock() - at) * self.rate)
        return max(0.0, (1 - tokens) / self.rate)


def parse_validity(text):
    """The timedelta of "90s", "10m", "12h" or "365d" (validity of the certificates issued)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", str(text))
    if not m or int(m[1]) == 0:
        raise SettingError(f"certificate validity {text!r} is not valid: give a positive "
                                "number and a unit, e.g. 90s, 10m, 12h or 365d")
    return datetime.timedelta(seconds=int(m[1]) * _UNITS[m[2]])
