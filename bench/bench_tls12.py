"""upcert's own TLS 1.2 client (firmware/upcert/tls12.py) against the port's built-in `tls`
module (mbedTLS), same OpenSSL server (CPython's ssl), same run: handshake time inside the
device process (TCP connect excluded), the smallest heap a handshake + one record each way
needs (the package as .mpy, as a board loads it), and what an open connection keeps.

    .venv/bin/python bench/bench_tls12.py [--runs 10] [--micropython PATH] [--heap]

Figures go in the README ("Benchmarks"). Timed on a noisy machine: compare the two clients of
the same run, not runs of different days.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "host_tools")]

from upcert.board.firmware import compile_mpy  # noqa: E402

from bench.interp import add_option, describe, label, select  # noqa: E402
from tests.host import test_tls12_interop as interop  # noqa: E402

BUILTIN = r"""
import json, socket, sys, time, gc, tls
a = json.load(open(sys.argv[1]))
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
for r in a["roots"]:
    ctx.load_verify_locations(bytes.fromhex(r))
ctx.load_cert_chain(bytes.fromhex(a["cert"]), bytes.fromhex(a["key"]))
ctx.verify_mode = tls.CERT_REQUIRED
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", a["port"])[0][-1])
t0 = time.ticks_ms()
c = ctx.wrap_socket(s, server_hostname=a["host"])
out = {"ms": time.ticks_diff(time.ticks_ms(), t0), "cipher": c.cipher()[0]}
c.write(b"ping")
out["got"] = c.read(4).decode()
c.close()
print("RESULT " + json.dumps(out))
"""
SUITE = {"ec": "ECDHE-ECDSA-AES128-GCM-SHA256", "rsa": "ECDHE-RSA-AES128-GCM-SHA256"}


class _Tmp:
    def mktemp(self, name):
        return pathlib.Path(tempfile.mkdtemp(prefix=name))


def _lib(folder):
    lib = folder / "lib" / "upcert"
    lib.mkdir(parents=True)
    for src in (ROOT / "firmware" / "upcert").glob("*.py"):
        (lib / f"{src.stem}.mpy").write_bytes(compile_mpy(src, folder / "cache"))
    return folder / "lib"


def _run(exe, lib, script, pki, kind, heap="2M"):
    srv = interop.PyServer(pki[kind]["ca"], cipher=SUITE[kind])
    d = pathlib.Path(tempfile.mkdtemp())
    args = {"port": srv.port, "host": "localhost", "roots": pki[kind]["roots"],
            "cert": pki[kind]["cert"], "key": pki[kind]["key"]}
    (d / "args.json").write_text(json.dumps(args))
    (d / "dev.py").write_text(script)
    proc = subprocess.run([exe, "-X", f"heapsize={heap}", str(d / "dev.py"),
                           str(d / "args.json")], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, MICROPYPATH=str(lib)))
    srv.sock.close()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    out = json.loads(lines[-1][7:]) if lines else {"error": (proc.stdout + proc.stderr)[-300:]}
    return out


def _min_heap(exe, lib, script, pki, kind, lo=8, hi=400):
    while lo < hi:
        mid = (lo + hi) // 2
        if _run(exe, lib, script, pki, kind, f"{mid}K").get("got") == "pong":
            hi = mid
        else:
            lo = mid + 1
    return lo


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    add_option(ap)
    ap.add_argument("--heap", action="store_true", help="also the smallest heap (binary search)")
    args = ap.parse_args(argv)
    exe = select(args.micropython)
    print(f"micropython: {label(describe(exe))}")
    pki = interop.pki.__wrapped__(_Tmp())
    lib = _lib(pathlib.Path(tempfile.mkdtemp()))
    result = {}
    for kind in ("ec", "rsa"):
        ms = {"upcert": [], "builtin": []}
        held = []
        for _ in range(args.runs):
            own = _run(exe, lib, interop.DEVICE, pki, kind)
            base = _run(exe, lib, BUILTIN, pki, kind)
            if own.get("got") != "pong" or base.get("got") != "pong":
                sys.exit(f"handshake failed: upcert {own}, builtin {base}")
            ms["upcert"].append(own["ms"])
            ms["builtin"].append(base["ms"])
            held.append(own["held"])
        med = {k: statistics.median(v) for k, v in ms.items()}
        row = {"suite": SUITE[kind], "runs": args.runs,
               "upcert_ms": [min(ms["upcert"]), med["upcert"], max(ms["upcert"])],
               "builtin_ms": [min(ms["builtin"]), med["builtin"], max(ms["builtin"])],
               "ratio_median": round(med["upcert"] / med["builtin"], 2),
               "held_by_connection_B": statistics.median(held)}
        if args.heap:
            row["min_heap_K"] = _min_heap(exe, lib, interop.DEVICE, pki, kind)
            # the same script shape with the tls module (mbedTLS allocates outside the GC heap):
            # what the script itself needs, so the difference is the handshake's
            row["min_heap_builtin_K"] = _min_heap(exe, lib, BUILTIN, pki, kind)
        result[kind] = row
        print(f"{SUITE[kind]}: handshake upcert {row['upcert_ms']} ms vs built-in "
              f"{row['builtin_ms']} ms (min/median/max of {args.runs}): x{row['ratio_median']}; "
              f"an open connection keeps {row['held_by_connection_B']:.0f} B"
              + (f"; smallest heap {row['min_heap_K']}K (with the tls module: "
                 f"{row['min_heap_builtin_K']}K)" if args.heap else ""))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
