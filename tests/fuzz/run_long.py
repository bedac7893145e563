"""Long fuzzing run of the device's DER/X.509 readers (x509.py, certlean.py), by hand (the test suite runs a short one):

    .venv/bin/python -m tests.fuzz.run_long [--minutes 10] [--engine hypothesis|atheris]

hypothesis: rounds of the structure-aware strategies (mutate.py) with fresh seeds until time is
up; each example must pass check.py with both readers and agree with cryptography (and the two
readers with each other) where both accept it. Every
distinct failure is shrunk and saved as corpus/der/crash-<what>-<sha256[:10]>.der (--no-save
to keep the corpus as it is). atheris: coverage-guided libFuzzer over the firmware modules,
starting from a copy of the corpus; atheris 3.0.0 has a wheel for CPython 3.11 on PyPI
(`pip install --target /tmp/atheris-lib atheris==3.0.0`, then PYTHONPATH=/tmp/atheris-lib).
"""

import argparse
import collections
import hashlib
import inspect
import multiprocessing
import random
import re
import shutil
import sys
import tempfile
import time
import tracemalloc

import hypothesis
from hypothesis import HealthCheck, given, settings

from tests.fuzz import gencert
from tests.fuzz.check import Failure, check, check_lean
from tests.fuzz.fwload import CORPUS, load_firmware
from tests.fuzz.mutate import inputs

_ROUND = 3000  # examples per hypothesis round; each round starts from a fresh random seed


def _kind(text):
    return re.sub(r"\d+", "N", text.split(":")[0])[:60]


def save_crash(data, message):
    """Write a failing input to the corpus; return its path."""
    slug = re.sub(r"[^a-z0-9]+", "-", _kind(message).lower()).strip("-")[:40]
    path = CORPUS / f"crash-{slug}-{hashlib.sha256(data).hexdigest()[:10]}.der"
    path.write_bytes(data)
    return path


def _one(fw, data):
    out = check(fw, data)
    lean = check_lean(fw, data)
    problem = gencert.lean_vs_full(lean, out)
    if not data.startswith(b"-----"):
        problem = (problem or gencert.disagreement(out, data)
                   or gencert.disagreement(lean, data, gencert.crypto_view_lean))
    if problem:
        raise Failure(problem, data)
    return out


def _round(seed, seen):
    """One hypothesis round (in a worker process): (answers by kind, [(message, input)])."""
    fw, answers, found = load_firmware(), collections.Counter(), []

    @settings(max_examples=_ROUND, deadline=None, database=None, report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    @given(inputs())
    @hypothesis.seed(seed)
    def prop(data):
        try:
            out = _one(fw, data)
        except Failure as f:
            if _kind(str(f)) in seen:
                return  # known already: look for other bugs
            raise
        answers[_kind(out.get("message", "parsed"))] += 1

    try:
        prop()
    except Failure as f:  # shrunk by hypothesis to a small input
        found.append((str(f), f.data))
    return answers, found


def run_hypothesis(seconds, save=True, jobs=1):
    """Fuzz for `seconds` in `jobs` processes; return (answers by kind, [(message, path)]).

    Each round runs in a worker that is replaced every few rounds: check() starts and stops
    tracemalloc per input, which leaks process memory (and keeping it on is 5x slower)."""
    answers, seen, found = collections.Counter(), set(), []
    end = time.monotonic() + seconds
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs, maxtasksperchild=8) as pool:
        pending = []
        while pending or time.monotonic() < end:
            while time.monotonic() < end and len(pending) < jobs:
                seed = random.getrandbits(32)
                pending.append((seed, pool.apply_async(_round, (seed, frozenset(seen)))))
            seed, res = pending.pop(0)
            got, failures = res.get()
            answers.update(got)
            for msg, data in failures:
                if _kind(msg) in seen:
                    continue
                seen.add(_kind(msg))
                path = save_crash(data, msg) if save else None
                found.append((msg, path))
                print(f"FAILURE (round seed {seed}): {msg}" + (f" -> {path}" if path else ""),
                      flush=True)
    return answers, found


def _instrument(atheris, fw):
    for mod in (fw.der, fw.x509, fw.certlean):
        for obj in vars(mod).values():
            if getattr(obj, "__module__", None) != mod.__name__:
                continue
            funcs = vars(obj).values() if inspect.isclass(obj) else (obj,)
            for fn in funcs:
                if inspect.isfunction(fn):
                    atheris.instrument_func(fn)


def run_atheris(seconds, save=True):
    """libFuzzer over the firmware modules for `seconds` (does not return: libFuzzer exits).
    Failures are printed and saved, one input per kind, and the run goes on."""
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: pip install --target /tmp/atheris-lib atheris==3.0.0"
                 " and run with PYTHONPATH=/tmp/atheris-lib")
    fw = load_firmware()
    _instrument(atheris, fw)
    tracemalloc.start()
    work = tempfile.mkdtemp(prefix="upcert-fuzz-")
    shutil.copytree(CORPUS, f"{work}/corpus")

    seen = set()

    def one_input(data):
        try:
            _one(fw, data)
        except Failure as f:  # report each kind once and go on (raising would end the run)
            if _kind(str(f)) not in seen:
                seen.add(_kind(str(f)))
                path = save_crash(data, str(f)) if save else None
                print(f"FAILURE: {f}" + (f" -> {path}" if path else ""), file=sys.stderr)

    atheris.Setup([sys.argv[0], f"{work}/corpus", f"-max_total_time={int(seconds)}",
                   "-timeout=5", "-rss_limit_mb=2048", f"-artifact_prefix={work}/",
                   "-print_final_stats=1"], one_input)
    atheris.Fuzz()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--engine", choices=("hypothesis", "atheris"), default="hypothesis")
    ap.add_argument("--jobs", type=int, default=1, help="hypothesis: processes in parallel")
    ap.add_argument("--no-save", action="store_true", help="do not add failures to the corpus")
    args = ap.parse_args(argv)
    seconds = args.minutes * 60
    if args.engine == "atheris":
        run_atheris(seconds, save=not args.no_save)
    t0 = time.monotonic()
    answers, found = run_hypothesis(seconds, save=not args.no_save, jobs=args.jobs)
    total = sum(answers.values())
    print(f"{total} inputs in {time.monotonic() - t0:.0f} s; answers by kind:")
    for kind, n in answers.most_common():
        print(f"  {n:8d}  {kind}")
    print(f"{len(found)} distinct failure(s)")
    for msg, path in found:
        print(f"  {msg}" + (f" -> {path}" if path else ""))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
