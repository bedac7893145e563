"""Heap of one whole agent cycle with a certificate rotation (issue #3's target: -X heapsize=64K).

Against the real stand-in (mosquitto + identity plugin + provisioning service, EC CA so the
device also verifies the issuer's signature: the heaviest path), the device package loaded as
.mpy (as on a board), the real fs store: app.main from start-up to the first telemetry after
the rotation. Prints, each as min / median / max over --runs runs (fresh device each time):
1. the smallest `micropython -X heapsize` (KiB, bisected in --step KiB steps) at which that
   cycle completes, and
2. the peak live heap (gc.collect() then gc.mem_alloc(), at every log line and every poll of
   the link) of a run in a large heap (2M), and for the median run the live heap at each step.
Any MicroPython unix port runs it (--micropython, e.g. a 32-bit build: ESP32-sized objects).
Run: .venv/bin/python bench/bench_rotation_heap.py [--micropython PATH] [--runs 3] [--step 4]
     [--lo 48] [--hi 256] [--firmware DIR] [--json]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "host_tools")]

from upcert.aws.roots import amazon_roots  # noqa: E402
from upcert.board.firmware import compile_mpy  # noqa: E402
from upcert.cloud.standin import Cloud  # noqa: E402
from upcert.pki.ca import LocalCa  # noqa: E402
from upcert.pki.certs import cert_to_der  # noqa: E402

from bench import interp  # noqa: E402
from tests.host.test_rotation_device import make_device, mpy_lib  # noqa: E402
from tests.tools import micropython_cmd  # noqa: E402

# The board: the ESP32 board definition a device runs (boards/esp32_generic/board.py as .mpy, as
# `upcert provision` installs it: ~3.9 KB of a 32-bit heap, which a bench-only board of a few
# lines would leave out), here with the real clock and the real fs store (A/B slots) over the
# device folder. Its one hardware module on this path, `network` (C on the ESP32), is the
# stand-in below: a station already connected (the config has no 'wifi'); it costs ~0.4 KB of
# heap that a device does not spend. `esp32` is absent, so heap_room() is gc.mem_free(), as on a
# heap that cannot grow.
BOARD = ROOT / "boards" / "esp32_generic" / "board.py"
NETWORK = r"""
STA_IF = 0
STAT_IDLE = 1000
class WLAN:
    def __init__(self, i):
        pass
    def isconnected(self):
        return True
"""

# app.main until the first telemetry after the rotation (OK), or the first sign of trouble:
# telemetry before any rotation (the rotation code could not even be loaded), a failed step, a
# lost link or a refused connection (FAIL). As lean as a board's main.py can be made to stop:
# the harness's own names and bytecode stay in the heap (the profile's code, ~1.5 KB and a dozen
# interned names, is in the profiling runs only).
MAIN = r"""
import sys
import board
from upcert import app
done = []
def log(line):
    show(line)
    if line.startswith("upcert: rotation: done"):
        done.append(1)
    if " failed" in line or "link lost" in line or "cannot start" in line:
        print("RESULT FAIL")
        raise KeyboardInterrupt
    if line.startswith("upcert: published telemetry"):
        print("RESULT " + ("OK" if done else "FAIL (no rotation)"))
        raise KeyboardInterrupt
try:
    app.main(board, sys.argv[1] + "/config.json", log)
except KeyboardInterrupt:
    pass
"""
SCRIPT = "show = print\n" + MAIN
# PROFILE: the live heap at every log line and every poll of the link (sleep_ms), after a
# collection, and the peak.
PROFILE = r"""
import gc
import sys
import time
peak = [0, "", 0]
last = ["start"]
def mpy_bytes():
    # .mpy bytes of the device modules now loaded (their bytecode and strings).
    import os
    n = 0
    for k in sys.modules:
        if k.startswith("upcert.") or k == "umqtt.simple":
            n += os.stat(sys.argv[2] + "/" + k.replace(".", "/") + ".mpy")[6]
    return n
_sleep = time.sleep_ms
class T:
    pass
t = T()
for n in dir(time):
    setattr(t, n, getattr(time, n))
def sleep_ms(ms, where="poll"):
    gc.collect()
    a = gc.mem_alloc()
    if a > peak[0]:
        peak[0], peak[1], peak[2] = a, where + " after " + last[0], mpy_bytes()
    _sleep(ms)
t.sleep_ms = sleep_ms
sys.modules["time"] = t
def show(line):
    gc.collect()
    print("HEAP %d %s" % (gc.mem_alloc(), line))
    last[0] = line
    sleep_ms(0, "line")
""" + MAIN + r"""
print("PEAK %d %d %s" % (peak[0], peak[2], peak[1]))
"""


def run(folder, cloud, lib, n, heap, profile=False):
    """One app cycle with a rotation in a fresh device folder; (ok, output). The binary is
    tests.tools.micropython_cmd's: $UPCERT_MICROPYTHON (interp.select) or the .venv's."""
    dev = folder / f"dev{n}"
    make_device(dev, cloud, f"heap-bench-{n}", left_days=20)
    # The trust anchors of a board on AWS IoT with its own CA: Amazon Root CA 1 and 3 (the
    # server's chain; `upcert provision` pins them) and the CA that issues its certificates
    # (1.8 KB; the stand-in's CA alone is 0.5 KB). A rotation holds them from its start.
    (dev / "roots.der").write_bytes(b"".join(cert_to_der(c) for c in amazon_roots())
                                    + cert_to_der(cloud.ca.certificate))
    (dev / "board.py").unlink()  # make_device's, for the tests
    (dev / "board.mpy").write_bytes(compile_mpy(BOARD, folder / "cache"))
    (dev / "network.py").write_text(NETWORK)
    (dev / "run.py").write_text(PROFILE if profile else SCRIPT)
    # Paths as short as a board's: MicroPython interns each imported module's path (__file__),
    # "/lib/upcert/agent.mpy" on a board; "../lib/upcert/agent.mpy" here, not the 17 characters
    # longer temporary folder's.
    rel = os.path.relpath(lib, dev)
    env = {"MICROPYPATH": f".:{rel}", "PATH": "/usr/bin:/bin"}
    args = micropython_cmd(heap) + ["run.py", "."] + ([rel] if profile else [])
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=dev)
    except subprocess.TimeoutExpired as e:
        return False, f"timeout: {e.stdout}"
    out = proc.stdout + proc.stderr
    return "RESULT OK" in out, out


def why(out):
    """Why a cycle failed, in a few words."""
    if "FAIL (no rotation)" in out:
        return "telemetry before any rotation (rotation could not load)"
    if "MemoryError" in out or "memory allocation failed" in out:
        return "MemoryError"
    if out.startswith("timeout"):
        return "timeout"
    fail = re.search(r"^upcert: .*(failed|link lost|cannot start).*$", out, re.M)
    return fail[0][:80] if fail else "no RESULT"


def profile(out):
    """(peak live bytes, .mpy bytes loaded then, where, [(bytes, log line)]) of a PROFILE run."""
    peak = re.search(r"^PEAK (\d+) (\d+) (.*)$", out, re.M)
    steps = [(int(m[1]), m[2]) for m in re.finditer(r"^HEAP (\d+) (.*)$", out, re.M)]
    return int(peak[1]), int(peak[2]), peak[3], steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    interp.add_option(ap)
    ap.add_argument("--runs", type=int, default=3,
                    help="bisections and profile runs, each with a fresh device (default 3)")
    ap.add_argument("--step", type=int, default=4, help="bisection step, KiB (default 4)")
    ap.add_argument("--lo", type=int, default=48, help="KiB (default 48)")
    ap.add_argument("--hi", type=int, default=256, help="KiB (default 256)")
    ap.add_argument("--firmware", type=Path, default=ROOT / "firmware",
                    help="the folder holding the device package upcert/ (default: this checkout's)")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    a = ap.parse_args(argv)
    if a.runs < 1 or a.step < 1 or not 0 < a.lo < a.hi:
        ap.error("--runs and --step must be >= 1, and 0 < --lo < --hi")
    if not (a.firmware / "upcert" / "app.py").exists():
        ap.error(f"--firmware {a.firmware}: no upcert/app.py there")
    mp = interp.describe(interp.select(a.micropython))
    print(f"micropython: {interp.label(mp)}", flush=True)
    t0 = time.monotonic()
    least, profiles, trials = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ca = LocalCa.init(tmp / "ca", key_type="ec")
        with Cloud(tmp / "cloud", ca, cert_validity="400d") as cloud:
            lib = mpy_lib(tmp, a.firmware)
            interp.check_mpy(mp["path"], lib)
            for r in range(a.runs):
                print(f"run {r + 1} of {a.runs}:", flush=True)

                def ok(kib, r=r):
                    good, out = run(tmp, cloud, lib, len(trials), f"{kib}K")
                    trials.append({"run": r + 1, "kib": kib, "ok": good,
                                   "why": None if good else why(out)})
                    print(f"  heapsize={kib}K: {'ok' if good else 'fails: ' + why(out)}",
                          flush=True)
                    if not good and kib == a.hi:
                        print(out[-3000:])
                    return good

                least.append(interp.smallest(ok, a.lo, a.hi, a.step))
                good, out = run(tmp, cloud, lib, len(trials), "2M", profile=True)
                trials.append({"run": r + 1, "kib": 2048, "ok": good, "profile": True})
                if not good:
                    print(out[-3000:])
                    return 1
                profiles.append(profile(out))
                print(f"  peak live heap {profiles[-1][0]} B", flush=True)
    seconds = round(time.monotonic() - t0, 1)
    heap, live = interp.spread(least), interp.spread([p[0] for p in profiles])
    median_run = sorted(profiles)[(len(profiles) - 1) // 2]
    peak, code, where, steps = median_run
    print(f"\nmicropython: {interp.label(mp)}; {a.runs} runs, {seconds} s")
    print(f"smallest -X heapsize for a cycle with a rotation (min / median / max): "
          f"{interp.show(heap, 'K')} ({a.step} KiB steps)")
    print(f"peak live heap (after gc.collect) during the cycle (min / median / max): "
          f"{interp.show(live, ' B')}")
    print(f"  median run: {peak} B at {where}; .mpy bytes of the modules then loaded: {code} B")
    esp32 = None
    if mp["bits"] == 64:
        # 32-bit estimate: bytecode and strings keep their size, objects (pointer-sized words)
        # halve. Measure it instead with a 32-bit binary (--micropython).
        esp32 = code + (peak - code) // 2
        print(f"  a 32-bit port (ESP32) would hold about {esp32} B ({esp32 // 1024} KiB) live "
              "there (estimate; a 32-bit binary measures it: --micropython)")
    print("live heap at each log line (median run):")
    for b, line in steps:
        print(f"  {b:7d} B  {line[:100]}")
    if a.json:
        print(json.dumps({"micropython": mp, "runs": a.runs, "step_kib": a.step,
                          "seconds": seconds, "min_heapsize_kib": heap, "peak_live_bytes": live,
                          "peak_mpy_bytes_loaded": code, "esp32_estimate_bytes": esp32,
                          "peak_at": where, "trials": trials}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
