# The emulated board's I2C wires: a client of the host's bridge (host_tools/upcert/emu/i2c_bridge.py,
# which documents the wire protocol), installed as emu_machine's bus by connect(). Errors match
# the ESP32 port (machine_hw_i2c.c): a NACK is OSError(ENODEV), a bus timeout OSError(ETIMEDOUT).
import errno
import json
import socket
import struct

import emu_machine
from emu_machine import I2C, SoftI2C  # noqa: F401  (emu_i2c.I2C after connect(), for tests)
from micropython import const

_OP_WRITE = const(0x57)
_OP_READ = const(0x52)
_OP_CONTROL = const(0x43)
_HEADER = "<BBBIH"
_HEADER_SIZE = const(9)


class Bridge:
    """A connection to the bridge socket at `path`, opened at the first transfer (and again
    after the host restarted); `timeout_s` bounds each reply."""

    def __init__(self, path, timeout_s=2):
        self._path, self._timeout_s, self._sock = path, timeout_s, None
        self._head = bytearray(_HEADER_SIZE)

    def _conn(self):
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:  # sockaddr_un: sa_family (native u16) + path + NUL
                s.connect(struct.pack("H", socket.AF_UNIX) + self._path.encode() + b"\0")
            except OSError:
                s.close()
                raise OSError(errno.ENODEV) from None  # no bridge: an empty bus, as without a chip
            s.settimeout(self._timeout_s)
            self._sock = s
        return self._sock

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _recv(self, n):
        buf = bytearray(n)
        mv, got = memoryview(buf), 0
        while got < n:
            k = self._sock.readinto(mv[got:])
            if not k:
                raise OSError(errno.ECONNRESET)
            got += k
        return buf

    def _call(self, op, addr, stop, freq, data, n):
        """Send one request; returns the reply's payload (b"" for W), or None for a NACK."""
        s = self._conn()
        struct.pack_into(_HEADER, self._head, 0, op, addr, 1 if stop else 0, freq, n)
        try:
            s.write(self._head)
            if data:
                s.write(data)
            if self._recv(1)[0]:
                return None
            if op == _OP_WRITE:
                return b""
            return bytes(self._recv(struct.unpack("<H", self._recv(2))[0]))
        except OSError as e:
            self.close()  # the stream may be out of step: start afresh next time
            if e.args[0] in (errno.ETIMEDOUT, errno.EAGAIN):
                raise OSError(errno.ETIMEDOUT) from None
            raise OSError(errno.ENODEV) from None  # the host went away: a vanished device
        except BaseException:
            # Ctrl-C (KeyboardInterrupt) between a request and its reply: a wire has no such
            # state, but this stream would be out of step (the next call would read this
            # reply), so it is dropped and the next call starts afresh.
            self.close()
            raise

    def writeto(self, addr, buf, stop, freq):
        if self._call(_OP_WRITE, addr, stop, freq, buf, len(buf)) is None:
            raise OSError(errno.ENODEV)

    def readfrom_into(self, addr, buf, stop, freq):
        got = self._call(_OP_READ, addr, stop, freq, None, len(buf))
        if got is None:
            raise OSError(errno.ENODEV)
        if len(got) != len(buf):  # out of step (cannot happen after the close above): resync
            self.close()
            raise OSError(errno.EIO)
        buf[:] = got

    def scan(self, freq):
        """Addresses 0x08-0x77 that acknowledge an empty write (as the ESP32 port's scan)."""
        return [a for a in range(0x08, 0x78)
                if self._call(_OP_WRITE, a, True, freq, None, 0) is not None]

    def control(self, addr, request):
        """Send a JSON control request (e.g. {"fault": "crc", "count": 1}) to the device at
        `addr`; returns its JSON reply as a dict."""
        body = json.dumps(request).encode()
        return json.loads(self._call(_OP_CONTROL, addr, True, 0, body, len(body)))


_bridge = None


def connect(path, timeout_s=2):
    """Wire emu_machine.I2C to the bridge at `path` (connects lazily); returns the Bridge."""
    global _bridge
    if _bridge is not None:
        _bridge.close()
    _bridge = Bridge(path, timeout_s)
    emu_machine.attach_bus(_bridge)
    return _bridge


def control(addr, request):
    """Control request to the device at `addr` through the connected bridge (tests)."""
    if _bridge is None:
        raise OSError(errno.ENODEV)
    return _bridge.control(addr, request)
