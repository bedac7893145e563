"""Fuzzing the device's DER/X.509 reader (firmware/upcert/der.py, x509.py): hypothesis on CPython
against the same code (tests/fuzz), checked against pyca/cryptography, plus the corpus
(tests/fuzz/corpus/der) replayed on the MicroPython unix port with a small heap.
Property: x509.load() returns a Certificate or raises CertificateError with a reason, within
1 s and 64 KiB + 8x the input of allocation; `python -m tests.fuzz.run_long` runs it for longer.
"""

import json
import os
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import fwload, gencert, mutate
from tests.fuzz.check import check
from tests.fuzz.make_corpus import EDGES
from tests.tools import ROOT, micropython_cmd, require

# The unix port's heap for the replay: the reader must fit beside the .mpy modules (as on a
# board, where they are frozen or .mpy, not compiled from source). 48K until errors.py gained the
# reason codes (+0.6 KB live): at 48K the replay's 3.3 KB file buffer then found no contiguous
# block with 12 KB free (fragmentation); at 52K the smallest free heap seen is 13.7 KB.
REPLAY_HEAP = "52K"
_MPY_MODULES = ("__init__", "errors", "clock", "der", "sigalgs", "x509")


def fuzz(n):
    """Hypothesis settings: n examples; our own per-example time limit replaces the deadline."""
    return settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck))


def fw():
    return fwload.load_firmware()


@fuzz(12000)
@given(mutate.inputs())
def test_malformed_input_gives_certificate_or_certificate_error(data):
    check(fw(), data)  # raises Failure: other exception, hang, allocation, reason missing


@fuzz(600)
@given(gencert.certificates())
def test_generated_certificates_read_as_cryptography_reads_them(cert_label):
    cert, label = cert_label
    der = cert.public_bytes(serialization.Encoding.DER)
    assert check(fw(), der) == gencert.expected(cert), label
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert check(fw(), pem) == gencert.expected(cert), label + " (PEM)"


@fuzz(4000)
@given(st.one_of(mutate.mutated(max_steps=1), mutate.mutated(max_steps=2)))
def test_mutants_both_readers_accept_read_the_same(data):
    problem = gencert.disagreement(check(fw(), data), data)
    assert problem is None, problem


def test_corpus_is_small_and_holds_no_keys():
    files = fwload.corpus_files()
    assert 30 <= len(files) < 200
    assert sum(p.stat().st_size for p in files) < 1024 * 1024
    for p in files:
        assert b"PRIVATE KEY" not in p.read_bytes(), p
    names = {p.stem for p in files}
    assert set(EDGES) <= names, f"run `python -m tests.fuzz.make_corpus`: {set(EDGES) - names}"
    assert sum(1 for n in names if n.startswith("seed-")) >= 10


def _expect_edge(name, out):
    want = EDGES.get(name)
    if want is None:
        assert "error" not in out, f"{name}: {out}"
    else:
        assert want in out.get("message", "<parsed>"), f"{name}: {out}"


def test_corpus_on_cpython():
    accepted = 0
    for p in fwload.corpus_files():
        data = p.read_bytes()
        out = check(fw(), data)
        if p.stem in EDGES:
            _expect_edge(p.stem, out)
        want = gencert.crypto_view(data)
        if want is not None and "error" not in out:
            assert out == want, p.name
            accepted += 1
    assert accepted >= 12  # the seeds and the regressions that must parse


def _same(cpython, port):
    # binascii's error text differs between the ports; everything else must be identical.
    if "bad base64" in cpython.get("message", ""):
        return port.get("message", "").split("(")[0] == cpython["message"].split("(")[0]
    return cpython == port


def test_corpus_replayed_on_micropython(tmp_path):
    mpy_cross = require("mpy-cross")
    pkg = tmp_path / "upcert"
    pkg.mkdir()
    for name in _MPY_MODULES:
        src = ROOT / "firmware" / "upcert" / f"{name}.py"
        subprocess.run([mpy_cross, "-o", str(pkg / f"{name}.mpy"), str(src)], check=True)
    subprocess.run([mpy_cross, "-o", str(tmp_path / "replay_mp.mpy"),
                    str(ROOT / "tests" / "fuzz" / "replay_mp.py")], check=True)
    files = fwload.corpus_files()
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(str(p) for p in files))
    proc = subprocess.run(
        micropython_cmd(heapsize=REPLAY_HEAP) + ["-m", "replay_mp", str(listing)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, MICROPYPATH=str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.strip().split("\n")]  # not splitlines()
    assert [r["path"] for r in rows] == [str(p) for p in files], proc.stderr
    for p, r in zip(files, rows, strict=True):
        r.pop("path")
        r.pop("mem_free")
        assert r.get("error") in (None, "CertificateError"), f"{p.name}: {r}"
        if p.stem in EDGES:
            _expect_edge(p.stem, r)
        cpython = check(fw(), p.read_bytes())
        assert _same(cpython, r), f"{p.name}: CPython {cpython} vs unix port {r}"


@pytest.mark.parametrize("name", ["seed-ec256-ecdsa256", "seed-amazon_root_ca_1"])
def test_every_truncation_and_length_lie_of_a_seed(name):
    # Exhaustive, not sampled: each prefix, and each element's length field rewritten each way.
    data = (fwload.CORPUS / f"{name}.der").read_bytes()
    for n in range(len(data)):
        assert "error" in check(fw(), data[:n], memory=False)
    for off, hl, n in mutate.offsets(mutate.parse(data)).values():
        for lie in mutate.LIES:
            for extra in (0, 1, 127, 128, 255, 65535):
                check(fw(), mutate.with_length(data, off, hl, n, lie, extra), memory=False)
