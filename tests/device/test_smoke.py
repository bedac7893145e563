# Smoke test that the device runner itself works on the unix port.
import sys


def test_is_micropython():
    if sys.implementation.name != "micropython":
        raise AssertionError("device tests must run on MicroPython")


def test_errors_hierarchy():
    from upcert import errors

    if not issubclass(errors.StoreError, errors.UpcertError):
        raise AssertionError("StoreError must derive from UpcertError")
