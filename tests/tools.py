"""Helpers shared by the test suites: locating real components, failing (not skipping) under CI."""

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def require(name):
    """Path of a required executable. Under CI=true a missing one fails the test; else skips."""
    path = shutil.which(name) or (
        str(VENV_BIN / name) if (VENV_BIN / name).exists() else None
    )
    if path:
        return path
    msg = f"{name} not found: run `make setup` (it installs the .venv and Debian packages)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def micropython_cmd(heapsize=None):
    cmd = [require("micropython")]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    return cmd
