"""Helpers shared by the test suites: locating real components, failing (not skipping) under CI."""

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


# Debian installs daemons (mosquitto) in sbin, which is not on a normal user's PATH.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def require(name):
    """Path of a required executable. Under CI=true a missing one fails the test; else skips.

    Looks on PATH, then in the venv's bin, then in the sbin directories."""
    candidates = [VENV_BIN / name] + [Path(d) / name for d in SBIN_DIRS]
    path = shutil.which(name) or next(
        (str(p) for p in candidates if p.is_file() and os.access(p, os.X_OK)), None
    )
    if path:
        return path
    missing(f"{name} not found: run `make setup` (it installs the .venv and Debian packages)")


def missing(msg):
    """A required component is absent: fail under CI=true (a broken install), else skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


# What building the stand-in's mosquitto plugin needs, with the Debian package of each.
PLUGIN_HEADERS = {"/usr/include/mosquitto_broker.h": "mosquitto-dev",
                  "/usr/include/mosquitto.h": "libmosquitto-dev",
                  "/usr/include/openssl/x509.h": "libssl-dev"}


def require_plugin_build():
    """mosquitto, gcc and the headers the stand-in's plugin is compiled against."""
    require("mosquitto")
    require("gcc")
    for path, pkg in PLUGIN_HEADERS.items():
        if not Path(path).exists():
            missing(f"{path} missing: apt-get install {pkg} (`make setup`)")


def micropython_path():
    """The MicroPython unix port to run: $UPCERT_MICROPYTHON when set (a path, or a name on
    PATH; the benchmarks use it to compare binaries, e.g. a 32-bit build), else
    require("micropython")."""
    chosen = os.environ.get("UPCERT_MICROPYTHON")
    if not chosen:
        return require("micropython")
    path = shutil.which(chosen)
    if not path:
        pytest.fail(f"UPCERT_MICROPYTHON={chosen}: not an executable file")
    return os.path.abspath(path)


def micropython_cmd(heapsize=None):
    cmd = [micropython_path()]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    return cmd


def bounded(fn, limit_s, what="still running"):
    """fn() in a thread: (returned value or None, exception or None, seconds). Fails the test
    when it has not finished within limit_s: a hang, which an overall deadline must prevent."""
    import threading
    import time

    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["exc"] = exc

    started = time.monotonic()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), f"{what} after {limit_s} s"
    return box.get("value"), box.get("exc"), time.monotonic() - started


def wait_until(predicate, timeout_s, what, interval_s=0.02):
    """Poll predicate() until it returns something true, and return that. Fails the test
    naming `what` when timeout_s passes first: a wait is always for something observable,
    never a bare sleep. interval_s only paces the polling."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(interval_s)
