"""Runs the tests/device/test_*.py modules under the MicroPython unix port (never CPython).

One pytest item per device test function. The functions are found statically (top-level
`def test_*`, read with CPython's ast: the modules are never imported here). Each module runs
once per session through runner.py, on the first of its items; every item then checks its own
function's part of the output, between runner.py's "=== RUN name" delimiters.
"""

import ast
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.tools import micropython_cmd

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
RUNNER = HERE / "runner.py"
MODULES = sorted(p for p in HERE.glob("test_*.py") if p.name != "test_device.py")
TIMEOUT = 600  # seconds, per module
DELIM = "=== RUN "  # as printed by runner.py before each test
SUMMARY = re.compile(r"(\d+) passed, (\d+) failed")


def scan(path):
    """(names, duplicates) of the top-level `def test_*` functions of a device module, or
    (None, the error) when CPython cannot parse it."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as exc:  # one failing item for the module, not a collection error
        return None, f"{type(exc).__name__}: {exc}"
    names = [node.name for node in tree.body
             if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
    dups = sorted({n for n in names if names.count(n) > 1})
    return sorted(set(names)), dups


SCANNED = {module: scan(module) for module in MODULES}


def _params():
    params = []
    for module, (names, dups) in SCANNED.items():
        rel = module.relative_to(ROOT)
        if names is None:  # dups holds the parse error: one item, that fails
            bad = f"{rel} cannot be scanned for test functions: {dups}"
            params.append(pytest.param(module, None, [], bad, id=f"{module.stem}.SYNTAX_ERROR"))
            continue
        for name in names:
            params.append(pytest.param(module, name, dups, None, id=f"{module.stem}.{name}"))
        if not names:  # one item, that fails: a module with no tests is a mistake
            bad = f"{rel} has no top-level `def test_*` function: nothing would run"
            params.append(pytest.param(module, None, [], bad, id=f"{module.stem}.NO_TESTS"))
    return params


@dataclass
class Run:
    """The outcome of running one device module through runner.py."""
    module: Path
    output: str = ""
    returncode: int | None = None
    error: str | None = None  # set when the module as a whole failed: every item fails
    results: dict = field(default_factory=dict)  # name -> "PASS" / "FAIL" / None (no result)
    sections: dict = field(default_factory=dict)  # name -> that test's output
    reported: bool = False  # the module-level extras were reported on an item


def parse(run):
    """Splits runner.py's output per test and checks the run as a whole."""
    lines = run.output.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    summary = SUMMARY.fullmatch(lines[-1].strip()) if lines else None
    if summary:
        lines.pop()
    current = None
    for line in lines:
        if line.startswith(DELIM):
            current = line[len(DELIM):].strip()
            run.sections.setdefault(current, [])
            run.results.setdefault(current, None)
            continue
        if current is None:
            continue
        run.sections[current].append(line)
        if line == "PASS " + current:
            run.results[current] = "PASS"
        elif line.startswith("FAIL " + current + ":"):
            run.results[current] = "FAIL"
    run.sections = {name: "\n".join(text) for name, text in run.sections.items()}
    counts = [list(run.results.values()).count(s) for s in ("PASS", "FAIL")]
    if summary is None:
        run.error = (f"runner.py did not finish {run.module.name} (exit code {run.returncode}, "
                     "no closing 'N passed, N failed' line)")
        if run.results and list(run.results.values())[-1] is None:
            run.error += f"; it stopped during {list(run.results)[-1]}"
    elif [int(summary[1]), int(summary[2])] != counts:
        run.error = (f"runner.py's count '{summary[0]}' does not match its PASS/FAIL lines "
                     f"({counts[0]} passed, {counts[1]} failed)")
    elif run.returncode != (1 if counts[1] else 0):
        run.error = f"micropython exited with code {run.returncode}"


def run_module(module, tmp):
    """Runs a device module once under micropython, with the environment the tests expect."""
    env = dict(os.environ)
    # Fakes first, then the device package, then fetched device dependencies (umqtt).
    env["MICROPYPATH"] = os.pathsep.join(
        [str(HERE / "fakes"), str(ROOT / "firmware"), str(ROOT / ".build" / "deps"), ".frozen"]
    )
    env["UPCERT_TEST_TMP"] = str(tmp)
    run = Run(module)
    try:
        proc = subprocess.run(
            micropython_cmd() + [str(RUNNER), str(module)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,  # one stream: keeps the order
            text=True, timeout=TIMEOUT, env=env, cwd=str(ROOT),
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        run.output = out.decode(errors="replace") if isinstance(out, bytes) else out
        run.error = f"{module.name} timed out after {TIMEOUT} s"
        return run
    run.output, run.returncode = proc.stdout, proc.returncode
    parse(run)
    return run


@pytest.fixture(scope="session")
def device_run(tmp_path_factory):
    """device_run(module): the module's Run, made by the first item of that module in the session."""
    cache = {}

    def get(module):
        if module not in cache:
            cache[module] = run_module(module, tmp_path_factory.mktemp(module.stem))
        return cache[module]

    return get


def fail(*parts):
    pytest.fail("\n".join(p for p in parts if p), pytrace=False)


@pytest.mark.parametrize("module,name,dups,bad", _params())
def test_device(module, name, dups, bad, device_run):
    rel = module.relative_to(ROOT)
    if bad:  # the static scan found no test in the module
        fail(bad)
    micropython_cmd()  # skips (fails under CI=true) before running anything without micropython
    run = device_run(module)
    if run.error:
        fail(f"{rel}::{name}: {run.error}", "---- micropython output ----", run.output)
    problems = []
    if name in dups:
        problems.append(f"{name} is defined more than once at the top level of {rel}: "
                        "only the last definition runs")
    extras = sorted(set(run.results) - set(SCANNED[module][0]))
    if extras and not run.reported:
        # Reported once, on whichever item of the module runs first in this session.
        run.reported = True
        problems.append(f"runner.py ran {', '.join(extras)} from {rel}, which the static scan "
                        "(top-level `def test_*`) did not find, so no item reports it")
        for extra in extras:
            problems.append(f"---- {extra}: {run.results[extra]} ----\n{run.sections[extra]}")
    result = run.results.get(name, "missing")
    if result == "missing":
        problems.insert(0, f"{rel}::{name} was found by the static scan but runner.py never "
                        "ran it")
        fail(*problems, "---- micropython output ----", run.output)
    if result != "PASS":
        what = "failed" if result == "FAIL" else "gave no PASS/FAIL line"
        problems.insert(0, f"{rel}::{name} {what}:\n{run.sections[name]}")
    if problems:
        fail(*problems)
