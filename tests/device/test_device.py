"""Runs every tests/device/test_*.py under the MicroPython unix port (never CPython)."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.tools import micropython_cmd

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
MODULES = sorted(p for p in HERE.glob("test_*.py") if p.name != "test_device.py")


@pytest.mark.parametrize("module", MODULES, ids=[p.stem for p in MODULES])
def test_device_module(module, tmp_path):
    env = dict(os.environ)
    # Fakes first, then the device package, then fetched device dependencies (umqtt).
    env["MICROPYPATH"] = os.pathsep.join(
        [str(HERE / "fakes"), str(ROOT / "firmware"), str(ROOT / ".build" / "deps"), ".frozen"]
    )
    env["UPCERT_TEST_TMP"] = str(tmp_path)
    proc = subprocess.run(
        micropython_cmd() + [str(HERE / "runner.py"), str(module)],
        capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert " passed, 0 failed" in out, out
