"""What the benchmarks share (not a benchmark itself): the MicroPython binary they run and the
statistics of the heap figures.

The binary: `--micropython PATH`, else $UPCERT_MICROPYTHON, else the .venv's `micropython` as
tests/tools.py finds it. select() exports the choice as $UPCERT_MICROPYTHON, so
tests.tools.micropython_cmd and every child process run that binary too. Any unix-port build
will do, e.g. a 32-bit one whose heap objects have an ESP32's size: the device modules are
mpy-cross bytecode (no native code), which loads on either word size (check_mpy checks it).
"""

import os
import shutil
import statistics
import subprocess

ENV = "UPCERT_MICROPYTHON"

ABOUT = ("import sys\n"
         "print(64 if sys.maxsize > 2 ** 32 else 32)\n"
         "print('.'.join(str(x) for x in sys.implementation.version if x != ''))\n")


def add_option(parser):
    parser.add_argument("--micropython", metavar="PATH",
                        help=f"the MicroPython unix port to run (default: ${ENV}, else the "
                        ".venv's micropython)")


def select(path=None):
    """Absolute path of the binary to run (path, else $UPCERT_MICROPYTHON, else the .venv's),
    exported as $UPCERT_MICROPYTHON for tests.tools.micropython_cmd and child processes."""
    chosen = path or os.environ.get(ENV)
    if chosen:
        found = shutil.which(chosen)
        if not found:
            raise SystemExit(f"micropython {chosen!r} (--micropython or ${ENV}): not an "
                             "executable file")
        found = os.path.abspath(found)
    else:
        from tests.tools import micropython_cmd

        found = micropython_cmd()[0]
    os.environ[ENV] = found
    return found


def describe(exe):
    """{"path", "bits", "version"} of a MicroPython binary (bits: its word size)."""
    proc = subprocess.run([exe, "-c", ABOUT], capture_output=True, text=True, timeout=30)
    lines = proc.stdout.split()
    if proc.returncode or len(lines) < 2:
        raise SystemExit(f"{exe} does not run as MicroPython: {(proc.stdout + proc.stderr)[-500:]}")
    return {"path": exe, "bits": int(lines[0]), "version": lines[1]}


def label(info):
    return f"{info['path']} ({info['bits']}-bit, MicroPython {info['version']})"


def check_mpy(exe, lib, module="upcert.x509"):
    """Fail unless exe imports module from a .mpy under lib (mpy-cross output it can load)."""
    script = f"import {module} as m\nprint(m.__file__)\n"
    proc = subprocess.run([exe, "-c", script], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, MICROPYPATH=str(lib)))
    if proc.returncode or not proc.stdout.strip().endswith(".mpy"):
        raise SystemExit(f"{exe} cannot load the .mpy files of {lib}: "
                         f"{(proc.stdout + proc.stderr).strip()[-500:]}")


def smallest(ok, lo, hi, step):
    """Smallest n in [lo, hi] (multiples of step) with ok(n), assuming monotony; None when even
    hi fails."""
    if not ok(hi):
        return None
    if ok(lo):
        return lo
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def spread(values):
    """{"min", "median", "max", "runs"} of repeated figures (None: a run found none)."""
    got = [v for v in values if v is not None]
    if not got:
        return {"min": None, "median": None, "max": None, "runs": list(values)}
    return {"min": min(got), "median": statistics.median(got), "max": max(got),
            "runs": list(values)}


def show(s, unit=""):
    """'min / median / max' of a spread, with a unit."""
    if s["min"] is None:
        return "none"
    med = s["median"]
    med = int(med) if med == int(med) else med
    failed = sum(v is None for v in s["runs"])
    extra = f" ({failed} of {len(s['runs'])} runs found none)" if failed else ""
    return f"{s['min']}{unit} / {med}{unit} / {s['max']}{unit}{extra}"
