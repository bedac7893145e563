"""The I2C bus of an emulated board: a Unix-socket server that boards/unix/emu/emu_i2c.py
(the board's machine.I2C) talks to, forwarding each transfer to emulated devices (emu/atecc.py).

Wire protocol, little-endian, one request then one reply per transfer:
  request  op(1) addr(1) stop(1) freq_hz(u32) n(u16) [n bytes when op is W or C]
           op: W 0x57 write n bytes, R 0x52 read n bytes, C 0x43 control (n bytes of JSON)
  reply    status(1): 0 ACK, 1 NACK; then for R and C with status 0: n(u16) + n bytes
A write to address 0 is the wake pulse: SDA is low for the 8 bits of the address byte, i.e.
8/freq_hz seconds; every device sees it and nobody acknowledges (ATECC608 data sheet, "Wake": SDA low for tWLO).
Devices: `address`, `wake_pulse(low_us)`, `i2c_write(data, freq_hz) -> bool`,
`i2c_read(n, freq_hz) -> bytes | None`, `control(dict) -> dict` (emu.atecc.Atecc608), and
optionally `cut_pending`: true once a device's armed power cut is due, after which the bridge
answers no transfer but control requests (the board waits until its host process has cut the
power).
"""

import json
import os
import socket
import struct
import threading
import traceback

from upcert.errors import UpcertError

_HEADER = struct.Struct("<BBBIH")
OP_WRITE, OP_READ, OP_CONTROL = 0x57, 0x52, 0x43
ACK, NACK = 0, 1
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


class Bridge:
    """A running bridge (see serve()). close() stops it and removes the socket file."""

    def __init__(self, sock_path, devices):
        self.path, self.devices = str(sock_path), list(devices)
        if len(os.fsencode(self.path)) > _SUN_PATH_MAX:
            raise UpcertError(f"I2C bridge socket path {self.path} is longer than "
                              f"{_SUN_PATH_MAX} bytes: use a shorter board state folder")
        if os.path.exists(self.path):
            os.unlink(self.path)  # left by a board process that was killed
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        os.chmod(self.path, 0o600)
        self._server.listen(4)
        self._conns, self._closed = set(), False
        self._thread = threading.Thread(target=self._accept, name="i2c-bridge", daemon=True)
        self._thread.start()

    def device(self, addr):
        """The device answering at 7-bit `addr`, or None."""
        return next((d for d in self.devices if d.address == addr), None)

    def _accept(self):
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            while True:
                head = _recv_exact(conn, _HEADER.size)
                if head is None:
                    return
                op, addr, _stop, freq, n = _HEADER.unpack(head)
                data = b""
                if op in (OP_WRITE, OP_CONTROL) and n:
                    data = _recv_exact(conn, n)
                    if data is None:
                        return
                reply = self.handle(op, addr, freq, n, data)
                if op != OP_CONTROL and any(getattr(d, "cut_pending", False)
                                            for d in self.devices):
                    _hold(conn)  # the power is being cut: this reply never reaches the board
                    return
                conn.sendall(reply)
        except (OSError, ValueError):
            return  # client gone, or a malformed request: drop the connection
        except Exception:  # an emulator bug: say so in the host's log, drop the client
            traceback.print_exc()
            return
        finally:
            self._conns.discard(conn)
            conn.close()

    def handle(self, op, addr, freq, n, data):
        """One request -> its reply bytes (also used directly by tests)."""
        if op == OP_WRITE:
            if addr == 0:  # general call: the wake pulse; no device acknowledges it
                low_us = 8e6 / freq if freq else 0
                for dev in self.devices:
                    dev.wake_pulse(low_us)
                return bytes((NACK,))
            dev = self.device(addr)
            return bytes((ACK if dev is not None and dev.i2c_write(data, freq) else NACK,))
        if op == OP_READ:
            dev = self.device(addr)
            got = dev.i2c_read(n, freq) if dev is not None else None
            return bytes((NACK,)) if got is None else _payload(got)
        if op == OP_CONTROL:
            try:
                req = json.loads(data.decode())
            except (UnicodeError, ValueError):
                return _payload(json.dumps({"error": "control data is not JSON"}).encode())
            dev = self.device(addr)
            if dev is None:
                reply = {"error": f"no device at {addr:#04x}",
                         "devices": [d.address for d in self.devices]}
            else:
                reply = dev.control(req)
            return _payload(json.dumps(reply).encode())
        raise ValueError(f"unknown bridge op {op:#04x}")

    def close(self):
        """Stop accepting, drop the clients, remove the socket file. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        for conn in list(self._conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(2)
        if os.path.exists(self.path):
            os.unlink(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _payload(data):
    return bytes((ACK,)) + struct.pack("<H", len(data)) + bytes(data)


def _hold(conn):
    # Answer nothing until the board's interpreter is gone (its end of the socket closes).
    while conn.recv(4096):
        pass


def _recv_exact(conn, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def control(sock_path, addr, request, timeout_s=10):
    """Send a control request (a dict) to the device at `addr` on the bridge at `sock_path`
    from the host (tests); its answer (a dict)."""
    data = json.dumps(request).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(sock_path))
        s.sendall(_HEADER.pack(OP_CONTROL, addr, 1, 100000, len(data)) + data)
        head = _recv_exact(s, 3)
        if head is None or head[0] != ACK:
            raise UpcertError(f"I2C bridge {sock_path}: no answer to control request {request}")
        body = _recv_exact(s, struct.unpack("<H", head[1:])[0])
    return json.loads(body.decode())


def serve(sock_path, devices):
    """Start a bridge thread on the Unix socket `sock_path` for `devices`; returns the Bridge
    (close() it). Each client connection gets its own thread; devices lock themselves."""
    return Bridge(sock_path, devices)
