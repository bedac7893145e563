"""On-device P-256 timings on the MicroPython unix port: key generation, signing a digest,
verifying, building a CSR (median of 20 runs each), plus the .mpy sizes of p256/csr/derw.

Run: .venv/bin/python bench/bench_p256.py [--runs N] [--micropython PATH]. Figures go into the
README.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "host_tools")]

from upcert.board.firmware import compile_mpy  # noqa: E402
from upcert.errors import UpcertError  # noqa: E402

from bench import interp  # noqa: E402

MODULES = ("p256", "csr", "derw")
SIZE_BUDGET = 8 * 1024  # p256 + csr + derw as .mpy

# Runs under MicroPython: time each operation argv[1] times, print one JSON object of lists (us).
DEVICE = r"""
import sys, json, time, hashlib, gc
from upcert import p256, csr
runs = int(sys.argv[1])
subject = [("CN", "bench-device-0001"), ("O", "upcert"), ("C", "DE")]
t = {"keygen": [], "sign": [], "verify": [], "csr": []}
digest = hashlib.sha256(b"bench").digest()
for i in range(runs):
    gc.collect()
    t0 = time.ticks_us()
    k = p256.generate()
    k.public_point()
    t1 = time.ticks_us()
    r, s = k.sign_digest(digest)
    t2 = time.ticks_us()
    ok = p256.verify_digest(k.public_point(), digest, r, s)
    t3 = time.ticks_us()
    req = csr.build(k, subject)
    t4 = time.ticks_us()
    if not ok:
        raise SystemExit("signature did not verify")
    for name, a, b in (("keygen", t0, t1), ("sign", t1, t2), ("verify", t2, t3), ("csr", t3, t4)):
        t[name].append(time.ticks_diff(b, a))
print(json.dumps(t))
"""


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def run(runs, micropython=None):
    """Return ({op: [microseconds...]}, {module: mpy bytes}) measured on the unix port
    (micropython: a path; default $UPCERT_MICROPYTHON, else the .venv's)."""
    exe = interp.select(micropython)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench.py"
        script.write_text(DEVICE)
        env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
        proc = subprocess.run(
            [exe, str(script), str(runs)], capture_output=True, text=True, env=env, timeout=600
        )
    if proc.returncode:
        raise UpcertError(f"benchmark failed on the unix port: {proc.stderr.strip()[-500:]}")
    times = json.loads(proc.stdout)
    sizes = {m: len(compile_mpy(ROOT / "firmware" / "upcert" / f"{m}.py")) for m in MODULES}
    return times, sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per operation (default 20)")
    interp.add_option(parser)
    args = parser.parse_args(argv)
    try:
        times, sizes = run(args.runs, args.micropython)
    except UpcertError as exc:
        print(f"bench_p256: {exc}", file=sys.stderr)
        return 1
    mp = interp.describe(interp.select(args.micropython))
    print(f"P-256 on the MicroPython unix port ({interp.label(mp)}), {args.runs} runs each (ms)")
    print(f"  {'operation':24} {'median':>8} {'min':>8} {'max':>8}")
    labels = {
        "keygen": "key generation (d, dG)",
        "sign": "sign digest (RFC 6979)",
        "verify": "verify signature",
        "csr": "build CSR (sign incl.)",
    }
    for op, label in labels.items():
        xs = [x / 1000 for x in times[op]]
        print(f"  {label:24} {_median(xs):8.2f} {min(xs):8.2f} {max(xs):8.2f}")
    total = sum(sizes.values())
    state = "within" if total <= SIZE_BUDGET else "OVER"
    parts = ", ".join(f"{m} {n} B" for m, n in sizes.items())
    print(f".mpy: {parts}; total {total} B, {state} the {SIZE_BUDGET // 1024} KiB target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
