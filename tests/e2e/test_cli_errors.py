"""The CLI's board errors: one clear line on stderr and a non-zero exit."""

import os
import subprocess
import sys

from tests.tools import require

CLI = [sys.executable, "-m", "upcert.cli"]


def _status(port):
    return subprocess.run(CLI + ["board", "status", "--port", port], capture_output=True,
                          text=True, timeout=60)


def test_missing_serial_device():
    out = _status("/dev/does-not-exist")
    assert out.returncode == 1
    assert out.stderr.strip().startswith("upcert: no serial device /dev/does-not-exist")
    assert len(out.stderr.strip().splitlines()) == 1


def test_board_that_does_not_answer():
    master, slave = os.openpty()  # a serial line with nothing behind it
    try:
        out = _status(os.ttyname(slave))
    finally:
        os.close(master)
        os.close(slave)
    assert out.returncode == 1
    assert "does not answer" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_serial_port_in_use(board_factory):
    require("mpremote")
    from mpremote.transport_serial import SerialTransport

    board = board_factory()
    holder = SerialTransport(board.port, baudrate=115200)  # another program holds the port
    try:
        out = _status(board.port)
    finally:
        holder.close()
    assert out.returncode == 1
    assert "in use" in out.stderr and len(out.stderr.strip().splitlines()) == 1
