# Device tests for upcert.clock: epoch-independent UTC conversion, trust below the build date.
import time

from checks import eq, raises, true
from upcert import clock
from upcert.clock import BUILD_DATE, Clock, utc_seconds
from upcert.errors import ClockNotSetError


def test_utc_seconds_round_trips_through_gmtime():
    dates = (
        (1970, 1, 1, 0, 0, 0),
        (2000, 1, 1, 0, 0, 0),
        (2000, 2, 29, 12, 0, 1),
        (2024, 2, 29, 23, 59, 59),
        (2026, 11, 1, 0, 0, 0),
        (2049, 12, 31, 23, 59, 59),
        (2050, 1, 1, 0, 0, 0),
        (2100, 3, 1, 0, 0, 0),
        (2038, 1, 19, 3, 14, 8),
    )
    for d in dates:
        eq(tuple(time.gmtime(utc_seconds(d))[:6]), d, "gmtime(utc_seconds(%r))" % (d,))


def test_utc_seconds_counts_days():
    eq(utc_seconds((2001, 1, 1)) - utc_seconds((2000, 1, 1)), 366 * 86400, "2000 is a leap year")
    eq(utc_seconds((2101, 1, 1)) - utc_seconds((2100, 1, 1)), 365 * 86400, "2100 is not")
    eq(utc_seconds((1950, 1, 1)) - utc_seconds((1949, 12, 31, 23, 59, 59)), 1, "1950 boundary")
    eq(utc_seconds(time.gmtime(0)[:6]), 0, "port epoch is zero")


def test_untrusted_at_power_on():
    t = utc_seconds((2000, 1, 1, 0, 0, 5))
    c = Clock(time_fn=lambda: t)
    eq(c.trusted(), False, "trusted")
    raises(
        ClockNotSetError,
        c.require_trusted,
        contains="clock not set (reads 2000-01-01T00:00:05Z, before firmware build date 2026-11-01): sync NTP first",
    )


def test_trusted_from_build_date():
    b = utc_seconds(BUILD_DATE)
    eq(Clock(time_fn=lambda: b).trusted(), True, "at build date")
    eq(Clock(time_fn=lambda: b - 1).trusted(), False, "one second before")
    eq(Clock(time_fn=lambda: b + 86400).require_trusted(), b + 86400, "require_trusted returns now")


def test_min_valid_override():
    eq(Clock(time_fn=lambda: 100, min_valid=50).trusted(), True, "override")
    eq(Clock(time_fn=lambda: 10, min_valid=50).trusted(), False, "override below")


def test_sync_sets_time():
    state = {"t": utc_seconds((2000, 1, 1)), "calls": 0}

    def ntp():
        state["calls"] += 1
        state["t"] = utc_seconds((2027, 3, 4, 5, 6, 7))

    c = Clock(time_fn=lambda: state["t"], sync_fn=ntp)
    eq(c.trusted(), False, "before sync")
    eq(c.sync(), True, "sync result")
    eq(state["calls"], 1, "sync_fn called")
    eq(c.iso(), "2027-03-04T05:06:07Z", "iso")


def test_sync_failure_propagates():
    def ntp():
        raise OSError(110)

    c = Clock(time_fn=lambda: 0, sync_fn=ntp)
    raises(OSError, c.sync)
    eq(Clock(time_fn=lambda: 0).sync(), False, "no sync_fn: just trusted()")


def test_defaults_to_time_time():
    now = Clock().now()
    true(abs(now - time.time()) <= 2, "Clock().now() %r vs time.time() %r" % (now, time.time()))


def test_iso():
    eq(clock.iso(utc_seconds((2049, 12, 31, 23, 59, 59))), "2049-12-31T23:59:59Z", "iso")
    eq(Clock(time_fn=lambda: 0).iso(utc_seconds((2026, 11, 1))), "2026-11-01T00:00:00Z", "iso(t)")
