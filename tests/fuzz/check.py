"""The fuzz property: `x509.load(data)` (or `certlean.load`, reader=view_lean) returns a
certificate or raises CertificateError (with a reason and a byte offset) within a time limit and
a memory bound; anything else is a Failure.
"""

import signal
import tracemalloc
from contextlib import contextmanager

from tests.fuzz.fwload import view, view_lean

TIME_LIMIT_S = 1.0
# Allocation bound: the reader copies its input once or twice; more is a leak or a blow-up.
MEM_BASE = 64 * 1024
MEM_PER_BYTE = 8


class Failure(Exception):
    """The reader misbehaved on an input: the message says how; `data` is the input."""

    def __init__(self, msg, data=b""):
        super().__init__(msg)
        self.data = data


class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so the reader's `except` clauses cannot eat it."""


@contextmanager
def _time_limit(seconds):
    def ring(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check(fw, data, time_limit_s=TIME_LIMIT_S, memory=True, reader=view):
    """The reader's view of `data` (fwload.view dict, or reader's: fwload.view_lean); raise
    Failure on any misbehaviour.

    For many calls start tracemalloc once around them: started and stopped per call (the
    default when it is off) it leaks a few MB of process memory per thousand calls."""
    tracing = memory and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        with _time_limit(time_limit_s):
            out = reader(fw, data)
        peak = tracemalloc.get_traced_memory()[1] - before
    except _Timeout:
        raise Failure(f"hang: no answer within {time_limit_s} s ({len(data)}-byte input)",
                      data) from None
    except Exception as exc:
        raise Failure(f"{type(exc).__name__} escaped: {exc}", data) from exc
    finally:
        if tracing:
            tracemalloc.stop()
    limit = MEM_BASE + MEM_PER_BYTE * len(data)
    if memory and peak > limit:
        raise Failure(f"allocated {peak} bytes for a {len(data)}-byte input (limit {limit})", data)
    msg = out.get("message")
    if msg is not None and not (" at byte " in msg or msg.startswith(("PEM", "not a cert"))):
        raise Failure(f"CertificateError without a position or reason: {msg!r}", data)
    return out


def check_lean(fw, data, **kw):
    """check() with the lean reader (certlean.load; fwload.view_lean)."""
    return check(fw, data, reader=view_lean, **kw)
