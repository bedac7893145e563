"""Talking to a board over its serial port with mpremote's transport (raw REPL, raw paste).

Works the same for a real ESP32 on /dev/ttyUSB0 and for an emulated board's pty. Errors from
pyserial and mpremote are translated here, once, into BoardError with a message a person can act
on.
"""

import hashlib
import os
import textwrap

from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from .errors import UpcertError


class BoardError(UpcertError):
    """The board is missing, busy, silent, or a command on it failed."""


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


class Board:
    """A connection to a MicroPython board in the raw REPL. Use as a context manager."""

    def __init__(self, port, timeout_s=10):
        self.port = port
        self.timeout_s = timeout_s
        self._t = None

    def open(self):
        if not os.path.exists(self.port):
            raise BoardError(f"no serial device {self.port}: is the board plugged in / running?")
        try:
            # timeout=1: mpremote reads a pty with blocking read(1); without a serial timeout a
            # silent device would hang us forever instead of timing out.
            self._t = SerialTransport(self.port, baudrate=115200, timeout=1)
        except (TransportError, OSError) as exc:
            raise BoardError(f"cannot open {self.port}: {_open_failure(self.port, exc)}") from None
        try:
            self._t.enter_raw_repl(soft_reset=False, timeout_overall=self.timeout_s)
        except (TransportError, OSError) as exc:
            self.close()
            raise BoardError(
                f"board on {self.port} does not answer (no MicroPython raw REPL within "
                f"{self.timeout_s} s: {exc}); check it runs MicroPython, or reset it"
            ) from None
        return self

    def close(self):
        if self._t is not None:
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

    def exec(self, code, timeout_s=None):
        """Run code on the board; return what it printed. A device exception -> BoardError."""
        code = textwrap.dedent(code)
        try:
            out = self._t.exec_raw(code, timeout=timeout_s or self.timeout_s * 3)
        except TransportError as exc:
            raise BoardError(f"board on {self.port} stopped answering: {exc}") from None
        stdout, stderr = out
        if stderr:
            text = stderr.decode(errors="replace")
            raise BoardError(f"on the board: {_last_line(text)}")
        return stdout.decode(errors="replace")

    def write_file(self, path, data):
        """Write bytes to a file on the board, making parent folders."""
        parent = path.rsplit("/", 1)[0]
        if parent:
            self.makedirs(parent)
        try:
            self._t.fs_writefile(path, data, chunk_size=1024)
        except (TransportError, TransportExecError, OSError) as exc:
            raise BoardError(f"writing {path} on the board failed: {exc}") from None

    def read_file(self, path):
        try:
            return bytes(self._t.fs_readfile(path, chunk_size=1024))
        except (TransportError, TransportExecError, OSError) as exc:
            raise BoardError(f"reading {path} on the board failed: {exc}") from None

    def sha256_file(self, path):
        """Hex SHA-256 of a file on the board, or None when it does not exist."""
        out = self.exec(
            f"""
            import hashlib, binascii
            try:
                f = open({path!r}, 'rb')
            except OSError:
                print('-')
            else:
                h = hashlib.sha256()
                b = bytearray(512)
                while True:
                    n = f.readinto(b)
                    if not n:
                        break
                    h.update(b[:n])
                f.close()
                print(binascii.hexlify(h.digest()).decode())
            """
        ).strip()
        return None if out == "-" else out

    def makedirs(self, path):
        self.exec(
            f"""
            import os
            p = ''
            for part in {path!r}.strip('/').split('/'):
                p += '/' + part
                try:
                    os.mkdir(p)
                except OSError:
                    pass
            """
        )

    def sync_file(self, path, data):
        """Write data to path unless the board already holds exactly that. True if written."""
        if self.sha256_file(path) == hashlib.sha256(data).hexdigest():
            return False
        self.write_file(path, data)
        if self.sha256_file(path) != hashlib.sha256(data).hexdigest():
            raise BoardError(f"{path} on the board does not read back as written")
        return True

    def soft_reboot(self):
        """Leave the raw REPL and soft-reset from the friendly REPL (Ctrl-B, Ctrl-D): the board
        runs boot.py and main.py again, so an agent interrupted by our Ctrl-C goes back to work."""
        try:
            self._t.exit_raw_repl()
            # Wait for the friendly prompt: a Ctrl-D sent while the REPL is still switching can
            # be lost. Then Ctrl-D on an empty line, and wait until the board says it rebooted.
            self._t.read_until(1, b">>> ", timeout=5, timeout_overall=10)
            self._t.serial.write(b"\x04")
            self._t.read_until(1, b"soft reboot", timeout=5, timeout_overall=10)
        except (TransportError, OSError):
            pass
        self._t.close()
        self._t = None

    def hard_reset(self):
        """machine.reset(): reboot, running boot.py and main.py. Does not wait for the board."""
        try:
            self._t.exec_raw_no_follow("import machine\nmachine.reset()")
        except TransportError:
            pass
        self._t.close()
        self._t = None
