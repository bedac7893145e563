# Assertion helpers for the device tests (MicroPython has no unittest/pytest on the unix port).


def eq(got, want, what=""):
    """Fail unless got == want."""
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def true(cond, what):
    """Fail unless cond."""
    if not cond:
        raise AssertionError(what)


def raises(exc_type, fn, *args, contains=None):
    """Call fn(*args); it must raise exc_type (not another exception); returns the exception.

    contains: a substring (or tuple of substrings) the message must include.
    """
    try:
        fn(*args)
    except exc_type as exc:
        msg = str(exc)
        for part in (contains,) if isinstance(contains, str) else contains or ():
            if part not in msg:
                raise AssertionError("message %r lacks %r" % (msg, part)) from None
        return exc
    except Exception as exc:
        raise AssertionError(
            "expected %s, got %s: %s" % (exc_type.__name__, type(exc).__name__, exc)
        ) from None
    raise AssertionError("expected %s, nothing raised" % exc_type.__name__)


def tmpdir(name):
    """A fresh directory under $UPCERT_TEST_TMP (set by tests/device/test_device.py)."""
    import os

    root = os.getenv("UPCERT_TEST_TMP")
    if not root:
        raise AssertionError("UPCERT_TEST_TMP not set: run the device tests through pytest")
    path = root + "/" + name
    os.mkdir(path)
    return path
