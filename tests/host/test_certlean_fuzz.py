"""Fuzzing the lean certificate reader (firmware/upcert/certlean.py: what chain.py, rotate.py and
the agent read) as tests/host/test_der_fuzz.py fuzzes x509.py: hypothesis on CPython against the
same code (tests/fuzz), checked against pyca/cryptography and against x509.py, the reader it
replaces on those paths, plus the corpus replayed on the MicroPython unix port
(tests/fuzz/replay_lean_mp.py).
Property: certlean.load() returns a Cert whose extensions read, or raises CertificateError with
a reason and a byte offset, within 1 s and 64 KiB + 8x the input of allocation.
"""

import json
import os
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import fwload, gencert, mutate
from tests.fuzz.check import check, check_lean
from tests.fuzz.make_corpus import EDGES
from tests.tools import ROOT, micropython_cmd, require

# The unix port's heap for the replay: the reader beside its .mpy modules and a JSON row that
# holds the names, key and extensions as hex (~5 KB for a 4096-bit RSA root: 52K, x509's replay
# heap, is too tight for that string here).
REPLAY_HEAP = "64K"
_MPY_MODULES = ("__init__", "errors", "clock", "sigalgs", "certlean")
def fuzz(n):
    """Hypothesis settings: n examples; our own per-example time limit replaces the deadline."""
    return settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck))


def fw():
    return fwload.load_firmware()


@fuzz(12000)
@given(mutate.inputs())
def test_malformed_input_gives_cert_or_certificate_error(data):
    lean = check_lean(fw(), data)  # raises Failure: other exception, hang, allocation, no reason
    problem = gencert.lean_vs_full(lean, check(fw(), data))
    assert problem is None, problem


@fuzz(600)
@given(gencert.certificates())
def test_generated_certificates_read_as_cryptography_reads_them(cert_label):
    cert, label = cert_label
    want = gencert.expected_lean(cert)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert check_lean(fw(), der) == want, label
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert check_lean(fw(), pem) == want, label + " (PEM)"


@fuzz(4000)
@given(st.one_of(mutate.mutated(max_steps=1), mutate.mutated(max_steps=2)))
def test_mutants_both_readers_accept_read_the_same(data):
    lean = check_lean(fw(), data)
    problem = gencert.disagreement(lean, data, gencert.crypto_view_lean)
    assert problem is None, problem
    problem = gencert.lean_vs_full(lean, check(fw(), data))
    assert problem is None, problem


def test_corpus_on_cpython():
    accepted = 0
    for p in fwload.corpus_files():
        data = p.read_bytes()
        out = check_lean(fw(), data)
        want = gencert.crypto_view_lean(data)
        if want is not None and "error" not in out:
            assert out == want, p.name
            accepted += 1
        if p.stem in EDGES and EDGES[p.stem] is None:  # the edges x509.py must read
            assert "error" not in out, f"{p.name}: {out}"
        assert gencert.lean_vs_full(out, check(fw(), data)) is None, p.name
    assert accepted >= 12  # the seeds and the regressions that must parse


def test_corpus_replayed_on_micropython(tmp_path):
    mpy_cross = require("mpy-cross")
    pkg = tmp_path / "upcert"
    pkg.mkdir()
    for name in _MPY_MODULES:
        src = ROOT / "firmware" / "upcert" / f"{name}.py"
        subprocess.run([mpy_cross, "-o", str(pkg / f"{name}.mpy"), str(src)], check=True)
    for name in ("replay_mp", "replay_lean_mp"):
        subprocess.run([mpy_cross, "-o", str(tmp_path / f"{name}.mpy"),
                        str(ROOT / "tests" / "fuzz" / f"{name}.py")], check=True)
    files = fwload.corpus_files()
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(str(p) for p in files))
    proc = subprocess.run(
        micropython_cmd(heapsize=REPLAY_HEAP) + ["-m", "replay_lean_mp", str(listing)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, MICROPYPATH=str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.strip().split("\n")]  # not splitlines()
    assert [r["path"] for r in rows] == [str(p) for p in files], proc.stderr
    for p, r in zip(files, rows, strict=True):
        r.pop("path")
        r.pop("mem_free")
        assert r.get("error") in (None, "CertificateError"), f"{p.name}: {r}"
        cpython = check_lean(fw(), p.read_bytes())
        if "bad base64" in cpython.get("message", ""):  # binascii's text differs by port
            continue
        assert cpython == r, f"{p.name}: CPython {cpython} vs unix port {r}"


@pytest.mark.parametrize("name", ["seed-ec256-ecdsa256", "seed-amazon_root_ca_1"])
def test_every_truncation_and_length_lie_of_a_seed(name):
    # Exhaustive, not sampled: each prefix, and each element's length field rewritten each way.
    data = (fwload.CORPUS / f"{name}.der").read_bytes()
    assert "error" not in check_lean(fw(), data, memory=False)
    for n in range(len(data)):
        assert "error" in check_lean(fw(), data[:n], memory=False)
    for off, hl, n in mutate.offsets(mutate.parse(data)).values():
        for lie in mutate.LIES:
            for extra in (0, 1, 127, 128, 255, 65535):
                check_lean(fw(), mutate.with_length(data, off, hl, n, lie, extra), memory=False)
