"""Heap of one whole agent cycle with a certificate rotation (issue #3's target: -X heapsize=64K).

Against the real stand-in (mosquitto + identity plugin + provisioning service, EC CA so the
device also verifies the issuer's signature: the heaviest path), the device package loaded as
.mpy (as on a board), the real fs store: app.main from start-up to the first telemetry after
the rotation. Prints
1. the smallest `micropython -X heapsize` (KiB, bisected in 4 KiB steps) at which that cycle
   completes, and
2. the live heap (gc.collect() then gc.mem_alloc()) at every step of one run in a large heap:
   its peak, and the step where it happens, to find the big items.
Run: .venv/bin/python bench/bench_rotation_heap.py [--lo 48] [--hi 256] [--json]
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "host_tools")]

from upcert.certs import LocalCa  # noqa: E402
from upcert.cloud import Cloud  # noqa: E402

from tests.host.test_rotation_device import make_device, mpy_lib  # noqa: E402
from tests.tools import micropython_cmd  # noqa: E402

# The board: real clock, the real fs store (A/B slots) over the device folder.
BOARD = r"""
NAME = "unix-heap-bench"
def network_up(config):
    pass
def clock():
    from upcert.clock import Clock
    return Clock()
def store(config):
    from upcert.store_fs import FsStore
    return FsStore(config["store"]["root"])
"""

# app.main until the first telemetry after the rotation (OK), or the first sign of trouble:
# telemetry before any rotation (rotation off: too little RAM at start-up), a failed step, a
# lost link or a refused connection (FAIL). PROFILE=1: the live heap at every log line and
# every poll of the link (sleep_ms), after a collection.
SCRIPT = r"""
import gc
import sys
PROFILE = len(sys.argv) > 2
peak = [0, "", 0]
def mpy_bytes():
    # .mpy bytes of the device modules now loaded (their bytecode and strings).
    import os
    n = 0
    for k in sys.modules:
        if k.startswith("upcert.") or k == "umqtt.simple":
            n += os.stat(sys.argv[2] + "/" + k.replace(".", "/") + ".mpy")[6]
    return n
if PROFILE:
    import time
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
last = ["start"]
import board
from upcert import app
done = []
def log(line):
    if PROFILE:
        gc.collect()
        print("HEAP %d %s" % (gc.mem_alloc(), line))
        last[0] = line
        sleep_ms(0, "line")
    else:
        print(line)
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
if PROFILE:
    print("PEAK %d %d %s" % (peak[0], peak[2], peak[1]))
"""


def run(folder, cloud, lib, n, heap, profile=False):
    """One app cycle with a rotation in a fresh device folder; (ok, output)."""
    dev = folder / f"dev{n}"
    make_device(dev, cloud, f"heap-bench-{n}", left_days=20)
    (dev / "board.py").write_text(BOARD)
    (dev / "run.py").write_text(SCRIPT)
    env = {"MICROPYPATH": f"{dev}:{lib}", "PATH": "/usr/bin:/bin"}
    args = micropython_cmd(heap) + [str(dev / "run.py"), str(dev)] + ([str(lib)] if profile else [])
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=dev)
    except subprocess.TimeoutExpired as e:
        return False, f"timeout: {e.stdout}"
    out = proc.stdout + proc.stderr
    return "RESULT OK" in out, out


def smallest(ok, lo, hi, step):
    """Smallest KiB in [lo, hi] (multiples of step) with ok(KiB), assuming monotony; None."""
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lo", type=int, default=48, help="KiB (default 48)")
    ap.add_argument("--hi", type=int, default=256, help="KiB (default 256)")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ca = LocalCa.init(tmp / "ca", key_type="ec")
        with Cloud(tmp / "cloud", ca, cert_validity="400d") as cloud:
            lib = mpy_lib(tmp)
            runs = []

            def ok(kib):
                good, out = run(tmp, cloud, lib, len(runs), f"{kib}K")
                runs.append((kib, good))
                print(f"  heapsize={kib}K: {'ok' if good else 'fails'}", flush=True)
                if not good and kib == a.hi:
                    print(out[-3000:])
                return good

            least = smallest(ok, a.lo, a.hi, 4)
            good, out = run(tmp, cloud, lib, len(runs), "2M", profile=True)
            if not good:
                print(out[-3000:])
                return 1
    peak = re.search(r"^PEAK (\d+) (\d+) (.*)$", out, re.M)
    live, code = int(peak[1]), int(peak[2])
    steps = [(int(m[1]), m[2]) for m in re.finditer(r"^HEAP (\d+) (.*)$", out, re.M)]
    print(f"smallest -X heapsize for a cycle with a rotation: {least}K")
    print(f"peak live heap (after gc.collect) during the cycle: {live} B ({peak[3]})")
    # 32-bit estimate: bytecode and strings keep their size, objects (pointer-sized words) halve.
    esp32 = code + (live - code) // 2
    print(f"  of which .mpy bytes of the modules then loaded: {code} B; a 32-bit port (ESP32) "
          f"would hold about {esp32} B ({esp32 // 1024} KiB) live at that point")
    print("live heap at each log line:")
    for b, line in steps:
        print(f"  {b:7d} B  {line[:100]}")
    if a.json:
        print(json.dumps({"min_heapsize_kib": least, "peak_live_bytes": live,
                          "peak_mpy_bytes_loaded": code, "esp32_estimate_bytes": esp32,
                          "peak_at": peak[3], "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
