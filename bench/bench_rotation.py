"""Rotation time, from the decision to the new certificate in use, split by step.

The device package (as .mpy, like on a board) runs app.main on the MicroPython unix port with the
real fs store, against the real stand-in (mosquitto + identity plugin + provisioning service); its
certificate is due, so it rotates at once. Every log line is stamped with ticks_ms on the device;
a step takes from the previous step's line to its own: "rotation: start" is the decision,
"connected ... cert <new id>" the new certificate in use. N runs per CA key type (RSA, as AWS
signs; EC: the device also verifies the issuer's signature); median and range.
Run: .venv/bin/python bench/bench_rotation.py [--runs 5] [--ca rsa,ec] [--heapsize 200K] [--json]
     [--micropython PATH]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "host_tools")]

from upcert.cloud.standin import Cloud  # noqa: E402
from upcert.pki.ca import LocalCa  # noqa: E402

from bench import interp  # noqa: E402
from bench.bench_rotation_heap import BOARD  # noqa: E402  (the unix board: clock, fs store)
from tests.host.test_rotation_device import make_device, mpy_lib  # noqa: E402
from tests.tools import micropython_cmd  # noqa: E402

# app.main with every log line stamped (ms since start); stops at the first telemetry after the
# rotation, or at a failed step (the run is then reported, not timed).
SCRIPT = r"""
import sys, time
import board
from upcert import app
t0 = time.ticks_ms()
done = []
def log(line):
    print("%d %s" % (time.ticks_diff(time.ticks_ms(), t0), line))
    if line.startswith("upcert: rotation: done"):
        done.append(1)
    if line.startswith("upcert: rotation: failed") or line.startswith("upcert: cannot start"):
        print("BENCH-FAIL")
        raise KeyboardInterrupt
    if done and line.startswith("upcert: published telemetry"):
        raise KeyboardInterrupt
try:
    app.main(board, sys.argv[1] + "/config.json", log)
except KeyboardInterrupt:
    print("BENCH-END")
"""
# (step, log line that ends it); times are from the previous step's line.
STEPS = [
    ("key", r"rotation: new P-256 key"),
    ("CSR", r"rotation: CSR for CN="),
    ("issued", r"rotation: certificate \w+ issued"),
    ("checks", r"rotation: checks passed"),
    ("staged", r"rotation: staged"),
    ("registered", r"rotation: RegisterThing\(.*\) accepted"),
    ("trial", r"rotation: trial connection .* accepted"),
    ("committed", r"rotation: committed certificate"),
    ("reported", r"rotation: done"),
    ("connected", r"upcert: connected .* cert {new}"),
    ("telemetry", r"upcert: published telemetry"),
]


def _device(folder, cloud, thing):
    """A device whose certificate has 20 days left of 360 (renewal window: 30 days, no jitter):
    due at once."""
    make_device(folder, cloud, thing, left_days=20)
    config = json.loads((folder / "config.json").read_text())
    config["renew"] = {"days": 30, "fraction": 0.2, "jitter_s": 0}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "board.py").write_text(BOARD)
    (folder / "run.py").write_text(SCRIPT)


def one_run(folder, lib, heapsize):
    """{step: ms} of one rotation, plus totals; RuntimeError when it did not complete."""
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(folder), str(lib)]))
    proc = subprocess.run(micropython_cmd(heapsize) + [str(folder / "run.py"), str(folder)],
                          capture_output=True, text=True, timeout=180, env=env, cwd=folder)
    out = proc.stdout + proc.stderr
    if "BENCH-END" not in out or "BENCH-FAIL" in out:
        raise RuntimeError(f"the rotation did not complete:\n{out[-2000:]}")
    lines = [(int(m[1]), m[2]) for m in re.finditer(r"^(\d+) (upcert: .*)$", out, re.M)]
    start = next(i for i, (_, t) in enumerate(lines) if t.startswith("upcert: rotation: start"))
    new = re.search(r"rotation: committed certificate (\w+)", out)[1]
    at, times, prev, i = {}, {}, lines[start][0], start
    for step, rx in STEPS:
        rx = re.compile(rx.format(new=new))
        i = next(j for j in range(i + 1, len(lines)) if rx.search(lines[j][1]))
        times[step], prev, at[step] = lines[i][0] - prev, lines[i][0], lines[i][0]
    t0 = lines[start][0]
    times["decision to committed"] = at["committed"] - t0
    times["decision to new cert in use"] = at["connected"] - t0
    times["decision to first telemetry"] = at["telemetry"] - t0
    return times


def bench(key_type, runs, heapsize, work, firmware):
    ca = LocalCa.init(work / f"ca-{key_type}", key_type=key_type)
    lib = mpy_lib(work / f"lib-{key_type}", firmware)
    results = []
    with Cloud(work / f"cloud-{key_type}", ca, cert_validity="400d") as cloud:
        for n in range(runs):
            folder = work / f"dev-{key_type}-{n}"
            _device(folder, cloud, f"bench-rot-{key_type}-{n}")
            results.append(one_run(folder, lib, heapsize))
    return results


def table(key_type, results, heapsize):
    print(f"\nrotation, {key_type.upper()} CA, unix port -X heapsize={heapsize}, "
          f"{len(results)} runs (ms)")
    print(f"{'step':<30} {'median':>8} {'range':>15}")
    for step in results[0]:
        vals = [r[step] for r in results]
        if step == "decision to committed":
            print("-" * 55)
        print(f"{step:<30} {statistics.median(vals):>8.0f} {min(vals):>7.0f}..{max(vals):<7.0f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ca", default="rsa,ec", help="CA key types, comma-separated")
    ap.add_argument("--heapsize", default="200K", help="the e2e rotation boards' heap")
    ap.add_argument("--json", action="store_true", help="also print every run as JSON")
    interp.add_option(ap)
    ap.add_argument("--firmware", type=Path, default=ROOT / "firmware",
                    help="the folder holding the device package upcert/ (another checkout, to "
                    "compare commits)")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.ca.split(",") if k.strip()]
    if args.runs < 1 or not kinds or set(kinds) - {"rsa", "ec"}:
        ap.error("--runs must be >= 1 and --ca a list of rsa, ec")
    if not (args.firmware / "upcert" / "rotation.py").exists():
        ap.error(f"--firmware {args.firmware}: no upcert/rotation.py there")
    print(f"micropython: {interp.label(interp.describe(interp.select(args.micropython)))}")
    with tempfile.TemporaryDirectory(prefix="bench-rotation-") as tmp:
        for kind in kinds:
            results = bench(kind, args.runs, args.heapsize, Path(tmp), args.firmware)
            table(kind, results, args.heapsize)
            if args.json:
                print(json.dumps({"ca": kind, "runs": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
