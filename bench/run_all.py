"""`make bench`: every benchmark script in turn; their figures go into the README by hand.

Run: .venv/bin/python bench/run_all.py [--micropython PATH]: the MicroPython binary every bench
runs (exported as $UPCERT_MICROPYTHON; default: that variable, else the .venv's micropython).
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import interp  # noqa: E402

SCRIPTS = [
    "mpy_size.py",
    "bench_p256.py",
    "bench_agent.py",
    "bench_storm.py",
    "bench_rotation.py",
    "bench_rotation_heap.py",
    "bench_tls_crypto.py",
    "bench_tls12.py",
    "bench_tls12_atecc.py",
    "bench_provision_aws.py",
    "bench_factory.py",
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    interp.add_option(ap)
    a = ap.parse_args(argv)
    print(f"micropython: {interp.label(interp.describe(interp.select(a.micropython)))}",
          flush=True)
    failed = []
    for name in SCRIPTS:
        print(f"\n== {name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)]).returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
