"""Speed of the own TLS client's primitives on the MicroPython unix port: AES-128-GCM and
AES-128-CBC + HMAC-SHA256 records (KB/s), the TLS 1.2 PRF, SHA-512 of 1 KB, RSA-2048 verification
(PKCS#1 v1.5 and PSS), the GCM key set-up and its heap, plus the modules' .mpy sizes.

Run: .venv/bin/python bench/bench_tls_crypto.py [--runs N] [--micropython PATH]. The unix port on
a PC is some 30-100 times faster than an ESP32 at 240 MHz: compare figures between builds, not
with a board.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "host_tools")]

from upcert.board.firmware import compile_mpy  # noqa: E402
from upcert.errors import UpcertError  # noqa: E402

from bench import interp  # noqa: E402

MODULES = ("hmac256", "gcm", "cbc", "sha512", "rsa")

# Runs under MicroPython: argv[1] runs, argv[2] a JSON file {spki, msg, pkcs1, pss} (hex);
# prints one JSON object {operation: [microseconds per run]} and the GCM context's heap bytes.
DEVICE = r"""
import sys, json, time, gc, hashlib
from binascii import unhexlify
from upcert import cbc, gcm, hmac256, rsa, sha512
runs = int(sys.argv[1])
job = json.load(open(sys.argv[2]))
t = {}
def timed(name, fn, *args):
    gc.collect()
    xs = []
    for _ in range(runs):
        t0 = time.ticks_us()
        fn(*args)
        xs.append(time.ticks_diff(time.ticks_us(), t0))
    t[name] = xs
key = bytes(range(16))
g = gcm.GCM(key)
c = cbc.CBC(key, bytes(32))
hdr = bytes(11)
for n in (64, 1024, 16384):
    data = bytes(n)
    timed("gcm_seal_%d" % n, g.seal, bytes(12), hdr + b"\0\0", data)
    sealed = g.seal(bytes(12), hdr + b"\0\0", data)
    timed("gcm_open_%d" % n, g.open, bytes(12), hdr + b"\0\0", sealed)
    timed("cbc_seal_%d" % n, c.seal, hdr, data)
    rec = c.seal(hdr, data)
    timed("cbc_open_%d" % n, c.open, hdr, rec)
timed("gcm_key_setup", gcm.GCM, key)
timed("prf_key_block_104", hmac256.prf, bytes(48), b"key expansion", bytes(64), 104)
timed("sha512_1k", lambda: sha512.sha512(bytes(1024)).digest())
timed("sha384_1k", lambda: sha512.sha384(bytes(1024)).digest())
k = rsa.PublicKey.from_spki(unhexlify(job["spki"]))
d = hashlib.sha256(unhexlify(job["msg"])).digest()
if not (rsa.verify_pkcs1(k, "sha256", d, unhexlify(job["pkcs1"]))
        and rsa.verify_pss(k, "sha256", d, unhexlify(job["pss"]), 32)):
    raise SystemExit("RSA signatures did not verify")
timed("rsa2048_pkcs1", rsa.verify_pkcs1, k, "sha256", d, unhexlify(job["pkcs1"]))
timed("rsa2048_pss", rsa.verify_pss, k, "sha256", d, unhexlify(job["pss"]), 32)
gc.collect()
free = gc.mem_free()
keep = gcm.GCM(key)
gc.collect()
print(json.dumps({"times": t, "gcm_heap": free - gc.mem_free()}))
"""


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _job():
    key = rsa.generate_private_key(65537, 2048)
    msg = b"bench tls crypto"
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"spki": spki.hex(), "msg": msg.hex(),
            "pkcs1": key.sign(msg, padding.PKCS1v15(), hashes.SHA256()).hex(),
            "pss": key.sign(msg, pss, hashes.SHA256()).hex()}


def run(runs, micropython=None):
    """({"times": {op: [us...]}, "gcm_heap": bytes}, {module: mpy bytes}) on the unix port."""
    exe = interp.select(micropython)
    with tempfile.TemporaryDirectory() as tmp:
        script, job = Path(tmp) / "bench.py", Path(tmp) / "job.json"
        script.write_text(DEVICE)
        job.write_text(json.dumps(_job()))
        env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
        proc = subprocess.run([exe, str(script), str(runs), str(job)], capture_output=True,
                              text=True, env=env, timeout=600)
    if proc.returncode:
        raise UpcertError(f"benchmark failed on the unix port: {proc.stderr.strip()[-500:]}")
    sizes = {m: len(compile_mpy(ROOT / "firmware" / "upcert" / f"{m}.py")) for m in MODULES}
    return json.loads(proc.stdout), sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per operation (default 10)")
    interp.add_option(parser)
    args = parser.parse_args(argv)
    try:
        out, sizes = run(args.runs, args.micropython)
    except UpcertError as exc:
        print(f"bench_tls_crypto: {exc}", file=sys.stderr)
        return 1
    t = {op: _median(xs) for op, xs in out["times"].items()}
    mp = interp.describe(interp.select(args.micropython))
    print(f"TLS primitives on the MicroPython unix port ({interp.label(mp)}), median of "
          f"{args.runs} runs")
    print(f"  {'record (plaintext bytes)':26} {'GCM seal':>10} {'GCM open':>10} {'CBC seal':>10} "
          f"{'CBC open':>10}  (KB/s)")
    for n in (64, 1024, 16384):
        rates = [n / 1024 / (t[f"{op}_{n}"] / 1e6) for op in
                 ("gcm_seal", "gcm_open", "cbc_seal", "cbc_open")]
        print(f"  {n:<26} " + " ".join(f"{r:10.0f}" for r in rates))
    rows = (("GCM key set-up (tables)", "gcm_key_setup"),
            ("PRF, 104-byte key block", "prf_key_block_104"),
            ("SHA-512 of 1 KB", "sha512_1k"), ("SHA-384 of 1 KB", "sha384_1k"),
            ("RSA-2048 verify PKCS#1 v1.5", "rsa2048_pkcs1"), ("RSA-2048 verify PSS", "rsa2048_pss"))
    for label, op in rows:
        print(f"  {label:30} {t[op] / 1000:8.2f} ms")
    print(f"  GCM context heap: {out['gcm_heap']} B")
    parts = ", ".join(f"{m} {n} B" for m, n in sizes.items())
    print(f".mpy: {parts}; total {sum(sizes.values())} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
