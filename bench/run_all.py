"""`make bench`: every benchmark script in turn; their figures go into the README by hand."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "mpy_size.py",
    "bench_p256.py",
    "bench_agent.py",
    "bench_storm.py",
    "bench_rotation.py",
    "bench_rotation_heap.py",
]


def main():
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
