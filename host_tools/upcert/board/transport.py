"""Talking to a board over its serial port with mpremote's transport (raw REPL, raw paste).

Works the same for a real ESP32 on /dev/ttyUSB0 and for an emulated board's pty. Errors from
pyserial and mpremote are translated here, once, into BoardError with a message a person can act
on.

Every Board session has an overall deadline. mpremote only knows timeouts between characters,
so a board that keeps printing (an agent's telemetry after a reboot) would keep it waiting for
ever: the serial port mpremote reads and writes is wrapped (`_Line`) so that every call after the
deadline raises, and a watchdog timer cancels a read or write blocked at that moment. The same
wrapper watches for the boot banner an ESP32's ROM prints after any reset (`rst:0x1
(POWERON_RESET)`): a board that reboots in the middle of an operation (power cut, brown-out, the
EN button) ends it at once instead of at the deadline.
"""

import ast
import errno
import hashlib
import os
import re
import textwrap
import threading
import time
from dataclasses import dataclass, field

from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport
from serial import SerialException

from upcert.errors import UpcertError

# CPython 3.11 shares the AST constructor's recursion count across threads: two boards' answers
# parsed at once (a factory batch, the power-cut matrix) can fail with "SystemError: AST
# constructor recursion depth mismatch" (python/cpython#106905, fixed in later releases). Every
# ast call of the host tools that may run in a thread takes this lock.
AST_LOCK = threading.Lock()


def literal(text):
    """ast.literal_eval(text), one thread at a time (AST_LOCK)."""
    with AST_LOCK:
        return ast.literal_eval(text)

DEFAULT_DEADLINE_S = 120  # a whole Board session, unless the caller gives another
# What an ESP32's ROM prints first after every reset, also on the emulated board
# (boards/unix/README.md "Resets"): "rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)".
_RESET_BANNER = re.compile(rb"rst:0x[0-9a-fA-F]{1,2} \(([A-Z0-9_]+)\)")
_RAW_REPL = b"raw REPL; CTRL-B to exit\r\n"
_RETRY_S = 2.5  # Ctrl-C + Ctrl-A again after this long without the raw REPL's banner
# What a board prints once it is up after a reboot: the agent (main.py), or the REPL's prompt.
_BOOTED = (b"upcert:", b">>> ")


class BoardError(UpcertError):
    """The board is missing, busy, silent, or a command on it failed."""


class BoardTimeout(BoardError):
    """An operation on the board did not finish within its overall deadline."""


class BoardReset(BoardError):
    """The board rebooted (power cut, brown-out, reset button) in the middle of an operation."""


def _last_line(text):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text.strip()


def _open_failure(port, exc):
    """Why mpremote could not open port (it hides the cause behind 'failed to access')."""
    import serial

    try:
        serial.Serial(port, exclusive=True).close()
    except Exception as probe:  # pyserial's SerialException is not an OSError
        text = str(probe)
        if "exclusive" in text.lower() or "lock" in text.lower():
            return ("the serial port is in use by another program "
                    "(close mpremote, screen or minicom and try again)")
        return text
    return str(exc)


class _Gone(Exception):
    """Raised inside mpremote's calls once the session is over (deadline passed, board reset);
    Board turns it into BoardTimeout or BoardReset."""


class _Line:
    """The serial port as mpremote sees it: every read, write and poll first checks the Board's
    deadline, and what is read is watched for the ESP32's reset banner."""

    def __init__(self, serial, board):
        object.__setattr__(self, "_serial", serial)
        object.__setattr__(self, "_board", board)

    def __getattr__(self, name):
        return getattr(self._serial, name)

    def __setattr__(self, name, value):  # mpremote sets rts/dtr on close
        setattr(self._serial, name, value)

    def read(self, size=1):
        self._board._check()
        data = self._serial.read(size)
        if data:
            self._board._saw(data)
        return data

    def write(self, data):
        self._board._check()
        return self._serial.write(data)

    def inWaiting(self):  # noqa: N802 (pyserial's name, which mpremote uses)
        self._board._check()
        return self._serial.inWaiting()


@dataclass
class BoardInfo:
    """What a board says about its firmware (Board.probe)."""

    name: str  # sys.implementation.name: "micropython"
    version: tuple  # (1, 24, 1)
    mpy: int | None  # sys.implementation._mpy; None: the firmware imports no .mpy files
    machine: str  # sys.implementation._machine, e.g. "Generic ESP32 module with ESP32"
    platform: str  # sys.platform: "esp32" ("linux" on the emulated board)
    modules: dict = field(default_factory=dict)  # name -> None (missing) or [missing attributes]
    block_size: int | None = None  # os.statvfs('/'): filesystem block size
    blocks: int | None = None  # ... blocks in all
    free_blocks: int | None = None  # ... free blocks

    @property
    def version_text(self):
        return ".".join(str(n) for n in self.version) or "?"

    @property
    def mpy_version(self):
        """Major .mpy version the firmware imports (the low 8 bits of _mpy), or None."""
        return None if self.mpy is None else self.mpy & 0xFF

    @property
    def mpy_arch(self):
        """Native architecture index in _mpy (0: none, 9 xtensa, 10 xtensawin, ...)."""
        return None if self.mpy is None else ((self.mpy >> 8) >> 2) & 0x2F

    @property
    def free_bytes(self):
        if self.free_blocks is None or self.block_size is None:
            return None
        return self.free_blocks * self.block_size


# Runs on the board: facts about its firmware, printed as one Python literal (no json needed:
# a board without json must still be able to say so). Sent as code, not a call into the device
# package (Board.call): it runs first, before anything is written, on a board whose package may
# be missing, older or half-installed, to learn which firmware and .mpy version to install for.
_PROBE = """
def _upcert_probe(wanted):
    import sys, os
    i = sys.implementation
    out = {'name': i.name, 'version': tuple(i.version[:3]), 'mpy': getattr(i, '_mpy', None),
           'machine': getattr(i, '_machine', ''), 'platform': sys.platform, 'modules': {}}
    for name, attrs in wanted:
        try:
            m = __import__(name)
        except ImportError:
            out['modules'][name] = None
        else:
            out['modules'][name] = [a for a in attrs if not hasattr(m, a)]
    try:
        s = os.statvfs('/')
        out['fs'] = (s[0], s[2], s[3])
    except (AttributeError, OSError):
        out['fs'] = None
    print(repr(out))
_upcert_probe(%r)
del _upcert_probe
"""

# Board.call: before and after each call the device package's modules are forgotten (the
# agent's, which our Ctrl-C interrupted, an earlier call's, or ones an install just replaced),
# and main.py's globals (the interrupted agent) dropped: the call imports the package as the
# flash holds it now, and has the heap to itself (a package shipped as .py source is compiled
# on the board).
_FORGET = ("for _m in [m for m in sys.modules if m.startswith('upcert') or m == 'board']:\n"
           " del sys.modules[_m]\n")
_CALL = ("import sys, gc\n" + _FORGET + "globals().pop('app', None)\n"
         "globals().pop('board', None)\ngc.collect()\n"
         "from upcert import {module} as _c\n"
         "try:\n print(repr(_c.{function}({args})))\nfinally:\n del _c\n"
         + "".join(" " + line + "\n" for line in _FORGET.splitlines()) + " gc.collect()\n")
_CALL_NAME = re.compile(r"([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)")
_LITERALS = (str, bytes, int, bool, type(None))


def _literal(value):
    """repr() of value for code sent to the board; TypeError unless it is a plain literal (str,
    bytes, int, bool, None, and lists, tuples and str-keyed dicts of them), so a call's
    arguments can never be code."""
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if isinstance(value, _LITERALS):
        return repr(value)
    if isinstance(value, list | tuple):
        inner = ", ".join(_literal(v) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return "{" + ", ".join(f"{k!r}: {_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a plain literal for a board call: {type(value).__name__}")


class Board:
    """A connection to a MicroPython board in the raw REPL. Use as a context manager.

    timeout_s: for entering the raw REPL, and (x3) between characters of a command's answer.
    deadline_s: for the whole session, from open() to close(); past it every call raises
    BoardTimeout naming `operation`, the port and the deadline. extend_deadline() adds time
    once the caller knows how much it has to send. None: no deadline (not for tools)."""

    def __init__(self, port, timeout_s=10, deadline_s=DEFAULT_DEADLINE_S,
                 operation="board operation"):
        self.port = port
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.operation = operation
        self.doing = "connecting"
        self._t = None
        self._deadline = None
        self._timer = None
        self._failure = None  # ("deadline",) or ("reset", cause) once the session is over
        self._tail = b""
        self._watch_resets = False
        self._dirs = set()  # folders made or seen on the board in this session (makedirs)

    # -- the deadline and the reset watch ------------------------------------------------------
    def _check(self):
        if self._failure is None and self._deadline is not None \
                and time.monotonic() >= self._deadline:
            self._failure = ("deadline",)
        if self._failure is not None:
            raise _Gone()

    def _saw(self, data):
        if not self._watch_resets:
            return
        tail = self._tail + data
        self._tail = tail[-48:]
        if b")" in data:
            m = _RESET_BANNER.search(tail)
            if m:
                self._failure = ("reset", m.group(1).decode())
                raise _Gone()

    def _expire(self):
        # Watchdog thread: mark the session over and wake a read or write blocked right now
        # (pyserial's cancel_*); the next call through _Line raises in the caller's thread.
        # The port itself is closed there, by close(): closing it from here could hand its
        # descriptor number to another open() while mpremote still reads it.
        if self._failure is None:
            self._failure = ("deadline",)
        serial = getattr(self._t, "serial", None)
        serial = getattr(serial, "_serial", serial)
        for name in ("cancel_read", "cancel_write"):
            try:
                getattr(serial, name)()
            except Exception:
                pass

    def _arm(self):
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(max(0.0, self._deadline - time.monotonic()), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def extend_deadline(self, seconds):
        """Give the session `seconds` more (e.g. once the bytes to send are known)."""
        if seconds <= 0 or self._deadline is None or self._failure is not None:
            return
        self.deadline_s += seconds
        self._deadline += seconds
        self._arm()

    def remaining_s(self):
        """Seconds left before the deadline (None before open())."""
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def _gone_error(self):
        if self._failure and self._failure[0] == "reset":
            return BoardReset(
                f"{self.operation} on {self.port} stopped: the board rebooted "
                f"({self._failure[1]}) while {self.doing}; check its power supply and cable, "
                "then run it again")
        return BoardTimeout(
            f"{self.operation} on {self.port} gave up at its {self.deadline_s:.0f} s deadline "
            f"while {self.doing}: the board stopped answering or kept printing without "
            "finishing; check it (power, cable, reset it) and run it again")

    def _lost(self, exc):
        """BoardError for an mpremote/pyserial error: when the board has just rebooted (its banner
        arrives within a moment), say so; otherwise that it stopped answering."""
        if self._failure is None and self._t is not None and self._watch_resets:
            end = time.monotonic() + 0.5
            try:
                while time.monotonic() < end:
                    data = self._t.serial.read(256)  # at most 1 s (the port's timeout)
                    if not data:
                        break
            except (_Gone, OSError, TransportError):
                pass
        if self._failure is not None:
            return self._gone_error()
        return BoardError(f"board on {self.port} stopped answering while {self.doing}: {exc}")

    # -- session -------------------------------------------------------------------------------
    def open(self, boot_wait_s=0):
        """Connect and enter the raw REPL. boot_wait_s: the board has just rebooted; first
        listen (sending nothing) for up to that long until it shows it is up (main.py prints,
        or the REPL's prompt): a Ctrl-C that reaches a board still booting can be lost, or
        on the emulated board stop its interpreter."""
        if not os.path.exists(self.port):
            raise BoardError(f"no serial device {self.port}: is the board plugged in / running?")
        if self.deadline_s is not None:
            self._deadline = time.monotonic() + self.deadline_s
        try:
            # timeout=1: mpremote reads a pty with blocking read(1); without a serial timeout a
            # silent device would hang us forever instead of timing out.
            self._t = SerialTransport(self.port, baudrate=115200, timeout=1)
        except (TransportError, OSError) as exc:
            self._t = None
            raise BoardError(f"cannot open {self.port}: {_open_failure(self.port, exc)}") from None
        self._t.serial = _Line(self._t.serial, self)
        if self._deadline is not None:
            self._arm()
        try:
            if boot_wait_s:
                self._await_boot(boot_wait_s)
            self._enter_raw_repl()
        except _Gone:
            err = self._gone_error()
            self.close()
            raise err from None
        except (TransportError, OSError) as exc:
            self.close()
            raise BoardError(
                f"board on {self.port} does not answer (no MicroPython raw REPL within "
                f"{self.timeout_s} s: {exc}); check it runs MicroPython, or reset it"
            ) from None
        self._watch_resets = True
        self.doing = "talking to it"
        return self

    def _await_boot(self, wait_s):
        end = time.monotonic() + wait_s
        seen = b""
        while time.monotonic() < end and not any(m in seen for m in _BOOTED):
            seen = seen[-64:] + self._t.serial.read(max(1, self._t.serial.inWaiting()))

    def _enter_raw_repl(self):
        # mpremote's enter_raw_repl(soft_reset=False), without its print() of what the board
        # said on failure (our callers print one line, on stderr), and tried again every few
        # seconds: a Ctrl-C that lands while a board is still booting (just reset or powered
        # on) is lost, and main.py then runs on.
        t = self._t
        end = time.monotonic() + self.timeout_s
        data, tries = b"", 0
        while True:
            t.serial.write(b"\r\x03")  # Ctrl-C: interrupt a running program (main.py's agent)
            n = t.serial.inWaiting()
            while n > 0:
                t.serial.read(n)
                n = t.serial.inWaiting()
            t.serial.write(b"\r\x01")  # Ctrl-A: raw REPL
            left = end - time.monotonic()
            data = t.read_until(1, _RAW_REPL, timeout_overall=max(0.1, min(_RETRY_S, left)))
            if data.endswith(_RAW_REPL):
                if tries:
                    self._resync(end)
                t.in_raw_repl = True
                return
            if time.monotonic() >= end:
                break
            tries += 1
        said = _last_line(data.decode(errors="replace"))[-80:]
        raise TransportError("could not enter raw repl" + (f"; it printed {said!r}"
                                                             if said else ""))

    def _resync(self, end):
        # After more than one Ctrl-A (or with input held while the board booted) the board may
        # print its raw-REPL banner more than once, and mpremote would take a later one for the
        # answer to its next command. Run a command that prints a fresh token: the board answers
        # it after everything sent before, so once the token is read nothing stale is left.
        # Then one more Ctrl-A, for the banner and prompt mpremote expects.
        t = self._t
        token = f"upcert-sync-{os.getpid()}-{time.monotonic_ns()}"
        t.serial.write(f"print({token[:6]!r} + {token[6:]!r})".encode() + b"\x04")
        seen = b""
        while token.encode() not in seen or not seen.endswith(b"\x04>"):
            left = end - time.monotonic()
            if left <= 0:
                raise TransportError("the raw REPL does not run commands")
            seen += t.read_until(1, b"\x04>", timeout_overall=left)
        t.serial.write(b"\x01")
        data = t.read_until(1, _RAW_REPL, timeout_overall=max(0.1, end - time.monotonic()))
        if not data.endswith(_RAW_REPL):
            raise TransportError("the raw REPL went away after it was entered")

    def _stop_watchdog(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self):
        self._stop_watchdog()
        if self._t is not None:
            if self._failure is None:
                try:
                    self._t.exit_raw_repl()
                except Exception:
                    pass
            try:
                self._t.close()
            except Exception:
                pass
            self._t = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    # -- commands ------------------------------------------------------------------------------
    def _do(self, doing, fn, *args):
        """Run an mpremote call; its errors as one BoardError line saying what we were doing.
        This is the one place where the board's errors are translated: mpremote's
        TransportExecError (the board raised; its traceback's last line names the exception),
        its OSError for a file operation (errno mapped from the board's traceback), a lost
        line, and the session's end (deadline, reboot)."""
        self.doing = doing
        try:
            return fn(*args)
        except _Gone:
            raise self._gone_error() from None
        except TransportExecError as exc:
            raise BoardError(f"{doing} on the board failed: {_last_line(exc.error_output)}") \
                from None
        except (TransportError, SerialException) as exc:
            raise self._lost(exc) from None
        except OSError as exc:  # mpremote's translation of an OSError on the board
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise BoardError(f"{doing} on the board failed: {reason}") from None

    def _exec(self, code, timeout_s):
        # mpremote's Transport.exec, with our own timeout between characters (its exec always
        # waits 10 s: too short for a key made on the board's CPU).
        try:
            stdout, stderr = self._t.exec_raw(code, timeout=timeout_s)
        except OSError as exc:  # the serial line's (pyserial), never the board's: a lost line
            raise TransportError(str(exc)) from exc
        if stderr:
            raise TransportExecError(stdout, stderr.decode(errors="replace"))
        return stdout

    def exec(self, code, timeout_s=None, what=None):
        """Run code on the board; return what it printed. A device exception -> BoardError.
        what: what the code does, for error messages ("writing the credentials")."""
        code = textwrap.dedent(code)
        out = self._do(what or "running a command", self._exec, code,
                       timeout_s or self.timeout_s * 3)
        return out.decode(errors="replace")

    def call(self, name, *args, what=None, timeout_s=None, **kwargs):
        """Call function `name` ("module.function" of the device package, e.g.
        "hostcalls.status") on the board with plain literal arguments (_literal); return the
        literal it returns. The package's modules are loaded afresh for the call and forgotten
        after it (_CALL). A device exception -> BoardError naming `what`; a board whose package
        lacks the module (older than these host tools) -> BoardError saying to install it."""
        m = _CALL_NAME.fullmatch(name)
        if not m:
            raise ValueError(f"board call {name!r}: want 'module.function'")
        if not all(k.isidentifier() for k in kwargs):
            raise ValueError(f"board call {name!r}: keyword names must be identifiers")
        parts = [_literal(a) for a in args] + [f"{k}={_literal(v)}" for k, v in kwargs.items()]
        code = _CALL.format(module=m.group(1), function=m.group(2), args=", ".join(parts))
        what = what or f"running upcert.{name}"
        try:
            text = self.exec(code, timeout_s=timeout_s, what=what)
        except BoardError as exc:
            text = str(exc)
            if not isinstance(exc, BoardTimeout | BoardReset) and "ImportError" in text and (
                    f"'upcert.{m.group(1)}'" in text or "'upcert'" in text):
                raise BoardError(
                    f"{what}: the board has no upcert.{m.group(1)} (its upcert package is "
                    "missing, or older than these host tools): install it (upcert provision) "
                    "and run it again") from None
            raise
        # The answer is the last line: a repr() holds no raw newline (split("\n"), not
        # splitlines(): a certificate's CN may hold U+2028 or U+0085, which repr() leaves raw).
        lines = [ln.strip("\r") for ln in text.split("\n") if ln.strip()]
        try:
            return literal(lines[-1])
        except (ValueError, SyntaxError, IndexError, MemoryError, RecursionError):
            raise BoardError(f"{what}: the board's answer makes no sense: "
                             f"{text.strip()[-160:]!r}") from None

    def write_file(self, path, data):
        """Write bytes to a file on the board, making parent folders."""
        parent = path.rsplit("/", 1)[0]
        if parent:
            self.makedirs(parent)
        self._do(f"writing {path}", self._t.fs_writefile, path, data, 1024)

    def read_file(self, path):
        return bytes(self._do(f"reading {path}", self._t.fs_readfile, path, 1024))

    def sha256_file(self, path):
        """Hex SHA-256 of a file on the board (mpremote's fs_hashfile), or None when it does
        not exist."""

        def digest():
            try:
                return self._t.fs_hashfile(path, "sha256", 512).hex()
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return None
                raise

        return self._do(f"reading {path}", digest)

    def file_digests(self, paths):
        """{path: (size, hex SHA-256)} for files on the board, in one command; (None, None) for
        a path that is not there.

        Code sent inline, not a device call: install plans run it before the package is on the
        board (or while it is older), and one command for all files beats fs_hashfile's three
        round trips per file (and gives the sizes, for the room check)."""
        out = self.exec(
            f"""
            def _upcert_digests(paths):
                import hashlib, binascii
                b = bytearray(512)
                for p in paths:
                    try:
                        f = open(p, 'rb')
                    except OSError:
                        print('-')
                        continue
                    h, n = hashlib.sha256(), 0
                    while True:
                        k = f.readinto(b)
                        if not k:
                            break
                        h.update(b[:k] if k < 512 else b)
                        n += k
                    f.close()
                    print(n, binascii.hexlify(h.digest()).decode())
            _upcert_digests({list(paths)!r})
            del _upcert_digests
            """,
            what="reading what the board holds",
        ).split("\n")
        lines = [ln.strip() for ln in out if ln.strip()]
        if len(lines) != len(paths):
            raise BoardError(f"the board's file digests make no sense: {lines[:3]!r}")
        result = {}
        for path, line in zip(paths, lines, strict=True):
            if line == "-":
                result[path] = (None, None)
            else:
                size, digest = line.split()
                result[path] = (int(size), digest)
        return result

    def makedirs(self, path):
        """Make folder `path` and its parents on the board (mpremote's fs_mkdir); those made or
        seen in this session are not asked for again."""
        p = ""
        for part in path.strip("/").split("/"):
            p += "/" + part
            if p in self._dirs:
                continue
            self._do(f"making the folder {p}", self._mkdir, p)
            self._dirs.add(p)

    def _mkdir(self, path):
        try:
            self._t.fs_mkdir(path)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise

    def remove_files(self, paths):
        """Remove files on the board (mpremote's fs_rmfile); missing ones are fine."""
        for path in paths:
            self._do(f"removing {path}", self._rmfile, path)

    def _rmfile(self, path):
        try:
            self._t.fs_rmfile(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def sync_file(self, path, data):
        """Write data to path unless the board already holds exactly that. True if written."""
        if self.sha256_file(path) == hashlib.sha256(data).hexdigest():
            return False
        self.write_file(path, data)
        if self.sha256_file(path) != hashlib.sha256(data).hexdigest():
            raise BoardError(f"{path} on the board does not read back as written")
        return True

    def probe(self, modules=()):
        """BoardInfo: the firmware's version and .mpy ABI, which of `modules` ((name,
        [attributes]) pairs) it has, and the filesystem's free space. Writes nothing."""
        wanted = [(name, list(attrs)) for name, attrs in modules]
        text = self.exec(_PROBE % (wanted,), what="asking what firmware it runs").strip()
        try:
            got = literal(_last_line(text))
            fs = got.get("fs") or (None, None, None)
            return BoardInfo(got["name"], tuple(got["version"]), got["mpy"], got["machine"],
                             got["platform"], got["modules"], *fs)
        except (ValueError, SyntaxError, KeyError, TypeError):
            raise BoardError(f"the board's answer about its firmware makes no sense: "
                             f"{text[-120:]!r}") from None

    def soft_reboot(self):
        """Leave the raw REPL and soft-reset from the friendly REPL (Ctrl-B, Ctrl-D): the board
        runs boot.py and main.py again, so an agent interrupted by our Ctrl-C goes back to work."""
        self._watch_resets = False
        try:
            self._t.exit_raw_repl()
            # Wait for the friendly prompt: a Ctrl-D sent while the REPL is still switching can
            # be lost. Then Ctrl-D on an empty line, and wait until the board says it rebooted.
            self._t.read_until(1, b">>> ", timeout=5, timeout_overall=10)
            self._t.serial.write(b"\x04")
            self._t.read_until(1, b"soft reboot", timeout=5, timeout_overall=10)
        except (_Gone, TransportError, OSError):
            pass
        self._stop_watchdog()
        self._t.close()
        self._t = None

    def hard_reset(self):
        """machine.reset(): reboot, running boot.py and main.py. Does not wait for the board."""
        self._watch_resets = False  # this reset is ours
        try:
            self._t.exec_raw_no_follow("import machine\nmachine.reset()")
        except (_Gone, TransportError, OSError):
            pass
        self._stop_watchdog()
        self._t.close()
        self._t = None

    # -- a command run in two halves (tests that cut the power in the middle of one) -----------
    def start_exec(self, code, what=None):
        """Send code to run and return once the board has taken it, without waiting for what
        it prints (finish() reads that): meanwhile the caller watches the board, e.g. for a
        power cut it armed."""
        self.doing = what or "running a command on the board"
        try:
            self._t.exec_raw_no_follow(textwrap.dedent(code))
        except _Gone:
            raise self._gone_error() from None
        except (TransportError, OSError) as exc:
            raise self._lost(exc) from None

    def finish(self, timeout_s=None):
        """(stdout, stderr) as text of the command start_exec() sent, once it has ended."""
        try:
            out, err = self._t.follow(timeout=timeout_s or self.timeout_s * 3)
        except _Gone:
            raise self._gone_error() from None
        except (TransportError, OSError) as exc:
            raise self._lost(exc) from None
        return out.decode(errors="replace"), err.decode(errors="replace")

    def abandon(self):
        """Drop the connection without a word to the board: after a reset the caller caused
        (a power cut), close()'s Ctrl-B, which leaves the raw REPL, would reach the rebooted
        board instead."""
        self._watch_resets = False
        self._stop_watchdog()
        if self._t is not None:
            try:
                self._t.close()
            except Exception:
                pass
            self._t = None
