"""upcert's own TLS 1.2 client with the key in an emulated ATECC608 (Trust&Go-style chip, slot
0; upcert.emu.atecc behind the I2C bridge, as the emulated board has it): the handshake's host
time on the unix port, the part of it spent in the chip's calls (ECDHE: GenKey into TempKey +
ECDH; CertificateVerify: Nonce + Sign), the same handshake with the key in software (same
server, same run), the chip's nominal command times, and an estimate for an ESP32.

    .venv/bin/python bench/bench_tls12_atecc.py [--runs 5] [--micropython PATH] [--json]

The emulator holds each command busy (NACKing reads) for the data sheet's maximum execution
time, so the chip's part of the host time is those maxima plus the driver's polling and the
bridge. Figures go in the README ("Benchmarks").
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

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from upcert.emu.atecc import Atecc608  # noqa: E402
from upcert.emu.i2c_bridge import serve  # noqa: E402

from bench.bench_tls12 import SUITE, _lib, _run, _Tmp  # noqa: E402
from bench.interp import add_option, describe, label, select  # noqa: E402
from tests.host import test_tls12_interop as interop  # noqa: E402

# Maximum execution times (ms) of the commands a chip handshake runs, at the default clock
# divider: cryptoauthlib calib_execution.c (device_execution_time_608_m0), the figures
# firmware/upcert/atecc.py polls against. Typical times are lower; the data sheet gives maxima.
NOMINAL_MS = {"GenKey": 115, "ECDH": 75, "Nonce": 20, "Sign": 115}
# Bytes on the I2C bus for those four commands (packet = word address + count + opcode + 2
# params + data + CRC; responses count + data + CRC), plus a wake and an idle per call.
I2C_BYTES = (8 + 67) + (8 + 64 + 35) + (8 + 32 + 4) + (8 + 67) + 2 * (1 + 4 + 1)
I2C_HZ = 100000  # the ESP32-WROOM-32SE wires its ATECC608A at 100 kHz (9 clocks a byte)
# MicroPython on a 240 MHz ESP32 against this host's unix port, for code that is all Python
# (big-int and bytes work): 70-150x slower, from P-256 (7 ms here, about 0.5-1 s there). An
# estimate, to be replaced by a measurement on a board.
ESP32_SLOWER = (70, 150)

CHIP = r"""
import json, socket, sys, time
import emu_i2c, emu_machine
from upcert import tls12
from upcert.atecc import ATECC, Signer
a = json.load(open(sys.argv[1]))
emu_i2c.connect(a["sock"])


class Timed:
    # the chip's signer (the interface TlsClient takes), its two calls timed
    def __init__(self, signer):
        self.s = signer
        self.ms = {"ecdhe": 0, "sign": 0}

    def public_point(self):
        return self.s.public_point()

    def ecdhe(self, peer):
        t = time.ticks_ms()
        r = self.s.ecdhe(peer)
        self.ms["ecdhe"] += time.ticks_diff(time.ticks_ms(), t)
        return r

    def sign_digest(self, digest):
        t = time.ticks_ms()
        r = self.s.sign_digest(digest)
        self.ms["sign"] += time.ticks_diff(time.ticks_ms(), t)
        return r


signer = Timed(Signer(ATECC(emu_machine.I2C(0, freq=100000), 0x35), 0))
out = {}
if a.get("pub"):
    out["pub"] = signer.public_point().hex()
else:
    roots = [bytes.fromhex(r) for r in a["roots"]]
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", a["port"])[0][-1])
    t0 = time.ticks_ms()
    c = tls12.TlsClient(s, a["host"], roots, time.time(), (bytes.fromhex(a["cert"]), signer))
    out["ms"] = time.ticks_diff(time.ticks_ms(), t0)
    out["chip_ms"] = signer.ms
    out["cipher"] = c.cipher()[0]
    c.write(b"ping")
    out["got"] = c.read(4).decode()
    c.close()
print("RESULT " + json.dumps(out))
"""


def _chip_run(exe, lib, sock, args):
    d = pathlib.Path(tempfile.mkdtemp())
    (d / "args.json").write_text(json.dumps(dict(args, sock=str(sock))))
    (d / "dev.py").write_text(CHIP)
    path = os.pathsep.join([str(ROOT / "boards" / "unix" / "emu"), str(lib)])
    proc = subprocess.run([exe, "-X", "heapsize=2M", str(d / "dev.py"), str(d / "args.json")],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, MICROPYPATH=path))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        sys.exit(f"the chip handshake failed: {(proc.stdout + proc.stderr)[-800:]}")
    return json.loads(lines[-1][7:])


def _spread(values):
    return [min(values), statistics.median(values), max(values)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="the figures as JSON only")
    add_option(ap)
    args = ap.parse_args(argv)
    exe = select(args.micropython)
    if not args.json:
        print(f"micropython: {label(describe(exe))}")
    pki = interop.pki.__wrapped__(_Tmp())  # the CAs, and software identities for comparison
    work = pathlib.Path(tempfile.mkdtemp())
    lib = _lib(work)
    chip = Atecc608.open(work / "tng.json", "tng")  # slot 0: a permanent P-256 key
    sock = work / "i2c.sock"
    result = {"nominal_chip_ms": NOMINAL_MS, "nominal_chip_total_ms": sum(NOMINAL_MS.values()),
              "i2c_ms_at_100kHz": round(I2C_BYTES * 9 / I2C_HZ * 1000, 1)}
    with serve(sock, [chip]):
        pub = bytes.fromhex(_chip_run(exe, lib, sock, {"pub": True})["pub"])
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)
        for kind in ("ec", "rsa"):
            cert = pki[kind]["ca"].issue_device("tls-chip", point)
            ms, chip_ms, soft_ms = [], [], []
            for _ in range(args.runs):
                srv = interop.PyServer(pki[kind]["ca"], cipher=SUITE[kind])
                out = _chip_run(exe, lib, sock, {
                    "port": srv.port, "host": "localhost", "roots": pki[kind]["roots"],
                    "cert": cert.public_bytes(serialization.Encoding.DER).hex()})
                srv.join()
                if out.get("got") != "pong" or srv.error:
                    sys.exit(f"the chip handshake failed: {out}, server: {srv.error}")
                ms.append(out["ms"])
                chip_ms.append(out["chip_ms"]["ecdhe"] + out["chip_ms"]["sign"])
                soft = _run(exe, lib, interop.DEVICE, pki, kind)  # as bench_tls12 does
                if soft.get("got") != "pong":
                    sys.exit(f"the software-key handshake failed: {soft}")
                soft_ms.append(soft["ms"])
            med, med_chip = statistics.median(ms), statistics.median(chip_ms)
            software = med - med_chip
            nominal = result["nominal_chip_total_ms"] + result["i2c_ms_at_100kHz"]
            result[kind] = {
                "suite": SUITE[kind], "runs": args.runs,
                "handshake_host_ms": _spread(ms), "chip_calls_host_ms": _spread(chip_ms),
                "software_part_host_ms": software,
                "software_key_handshake_host_ms": _spread(soft_ms),
                "esp32_estimate_ms": [round(software * f + nominal) for f in ESP32_SLOWER],
            }
            r = result[kind]
            if not args.json:
                print(f"{SUITE[kind]}: handshake with the chip {r['handshake_host_ms']} ms "
                      f"(min/median/max of {args.runs}), of it the chip's calls "
                      f"{r['chip_calls_host_ms']} ms, the rest {software:.0f} ms; with a "
                      f"software key {r['software_key_handshake_host_ms']} ms; ESP32 estimate "
                      f"{r['esp32_estimate_ms'][0]}-{r['esp32_estimate_ms'][1]} ms (the rest "
                      f"x{ESP32_SLOWER[0]}-{ESP32_SLOWER[1]}, plus the chip's nominal "
                      f"{result['nominal_chip_total_ms']} ms and {result['i2c_ms_at_100kHz']} "
                      "ms of I2C)")
    print(json.dumps(result, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
