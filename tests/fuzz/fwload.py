"""Load the device package (firmware/upcert) under CPython without disturbing the host package,
which is also named `upcert`: a private meta-path finder serves `upcert.*` from firmware/ and
`micropython`, `cryptolib` from shims/ while importing, then sys.modules gets the host's entries
back. The loaded modules keep working because they reach each other through their own globals.
Code that imports inside its functions (the TLS client loads and drops modules as it goes) runs
inside `device()`, which gives it the device's `upcert` for that time.
"""

import hashlib
import importlib
import importlib.abc
import importlib.util
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
SHIMS = Path(__file__).resolve().parent / "shims"
CORPUS = Path(__file__).resolve().parent / "corpus" / "der"
_LOCK = threading.RLock()
_cache = {}
_SHIMMED = ("micropython", "cryptolib")
_between = {}  # the device's modules while device() is not running


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in _SHIMMED:
            return importlib.util.spec_from_file_location(name, SHIMS / (name + ".py"))
        if name == "upcert":
            return importlib.util.spec_from_file_location(
                name, FIRMWARE / "upcert" / "__init__.py",
                submodule_search_locations=[str(FIRMWARE / "upcert")],
            )
        if name.startswith("upcert."):
            file = FIRMWARE / "upcert" / (name.split(".", 1)[1] + ".py")
            if file.is_file():
                return importlib.util.spec_from_file_location(name, file)
            raise ImportError(f"firmware has no module {name} ({file} missing)")
        return None


def _ours(name):
    return name == "upcert" or name in _SHIMMED or name.startswith("upcert.")


def load_firmware(names=("errors", "der", "sigalgs", "certlean", "x509")):
    """The firmware modules `upcert.<name>` as attributes of a namespace (cached per process)."""
    key = tuple(names)
    with _LOCK:
        if key in _cache:
            return _cache[key]
        saved = {k: sys.modules.pop(k) for k in list(sys.modules) if _ours(k)}
        finder = _Finder()
        sys.meta_path.insert(0, finder)
        try:
            mods = {n: importlib.import_module("upcert." + n) for n in names}
        finally:
            sys.meta_path.remove(finder)
            for k in [k for k in sys.modules if _ours(k)]:
                del sys.modules[k]
            sys.modules.update(saved)
        ns = _cache[key] = SimpleNamespace(**mods)
        return ns


@contextmanager
def device(urandom=None):
    """Run device code: for the duration, `import upcert...` (also inside the device's own
    functions) gets firmware modules, and `upcert.drop()` works as on the board; the host's
    modules come back afterwards, and the device's are kept for the next time. urandom: a
    stand-in for os.urandom meanwhile (a replayed TLS handshake needs the client's randoms of
    the recording). Yields a function: import_module("upcert.tls12") -> the module.
    Not thread-safe for other code importing `upcert` meanwhile (the tests run it alone)."""
    with _LOCK:
        saved = {k: sys.modules.pop(k) for k in list(sys.modules) if _ours(k)}
        sys.modules.update(_between)
        finder = _Finder()
        sys.meta_path.insert(0, finder)
        real = os.urandom
        if urandom is not None:
            os.urandom = urandom
        try:
            yield importlib.import_module
        finally:
            os.urandom = real
            sys.meta_path.remove(finder)
            _between.clear()
            _between.update({k: sys.modules.pop(k) for k in list(sys.modules) if _ours(k)})
            sys.modules.update(saved)


def view(fw, data):
    """What the device reader makes of `data`: its fields, or {"error": type, "message": ...}.

    The same dict the MicroPython replay script (replay_mp.py) prints, so the two compare."""
    try:
        c = fw.x509.load(data)
    except fw.errors.CertificateError as exc:
        return {"error": "CertificateError", "message": str(exc)}
    return {
        "serial": c.serial, "subject_cn": c.subject_cn, "issuer_cn": c.issuer_cn,
        "not_before": c.not_before, "not_after": c.not_after,
        "not_before_tuple": list(c.not_before_tuple), "not_after_tuple": list(c.not_after_tuple),
        "key_type": c.key_type, "key_bits": c.key_bits, "public_key": bytes(c.public_key).hex(),
        "sig_alg": c.sig_alg, "sig_alg_aws_ok": c.sig_alg_aws_ok, "cert_id": c.cert_id(),
    }


def view_lean(fw, data):
    """What the lean reader (certlean.load) makes of `data`: the fields its callers use (chain.py,
    rotate.py, the agent), or {"error": type, "message": ...}. Its extensions are read too (as
    chain.py reads them): a malformed one is the view's error. Same dict as replay_lean_mp.py."""
    try:
        c = fw.certlean.load(data)
        ext = [[fw.certlean.oid(o, 0, len(o)), crit, bytes(v).hex()] for o, crit, v in
               c.extensions()]
    except fw.errors.CertificateError as exc:
        return {"error": "CertificateError", "message": str(exc)}
    a = c._at
    der = bytes(c.der)
    return {
        "subject_cn": c.subject_cn, "issuer_cn": c.issuer_cn,
        "not_before": c.not_before, "not_after": c.not_after,
        "key_type": c.key_type, "key_bits": c.key_bits, "public_key": bytes(c.public_key).hex(),
        "key_exp": c.key_exp, "sig_alg": fw.sigalgs.SIG_ALGS.get(c.sig_oid, c.sig_oid),
        "sig_alg_aws_ok": c.sig_oid in fw.sigalgs.SIG_ALGS,
        "cert_id": c.cert_id(), "signature_sha256": hashlib.sha256(c.signature).hexdigest(),
        "tbs_sha256": hashlib.sha256(der[a[0]:a[1]]).hexdigest(),
        "sig_alg_der": der[a[2]:a[3]].hex(),
        "issuer_der": der[a[4]:a[5]].hex(), "subject_der": der[a[6]:a[7]].hex(),
        "ski": c.ski.hex() if c.ski else None, "aki": c.aki.hex() if c.aki else None,
        "ext": ext,
    }


def corpus_files():
    """The corpus inputs, sorted by name."""
    return sorted(p for p in CORPUS.iterdir() if p.is_file() and not p.name.startswith("."))
