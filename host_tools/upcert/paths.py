"""Where the repository's parts are, and the MicroPython unix port: the base layer, imports
nothing of upcert but errors."""

import shutil
import sys
from pathlib import Path

from upcert.errors import UpcertError

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
BOARDS = ROOT / "boards"
BUILD = ROOT / ".build"


def find_micropython():
    """Path of the unix port: on PATH first, then beside this Python (the venv)."""
    path = shutil.which("micropython")
    if not path:
        cand = Path(sys.executable).parent / "micropython"
        path = str(cand) if cand.exists() else None
    if not path:
        raise UpcertError("micropython (the unix port) not found on PATH or in the venv: "
                          "run `make setup`")
    return path
