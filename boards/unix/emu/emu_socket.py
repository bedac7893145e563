# `socket` stand-in: the unix port's sockets, failing the way an ESP32's lwIP sockets fail while
# the host's network faults (emu_network.faults()) say so. The unix port's built-in module
# cannot be patched (a built-in module's dict is read-only), so emu_boot installs this one as
# `socket`/`usocket`; every other name is the built-in module's. A TCP socket is an io.IOBase
# stream over the real one, so the `tls` module wraps it like any socket and each read and write
# passes here. What each fault raises on an ESP32 (MicroPython ports/esp32/modsocket.c on lwIP):
# - getaddrinfo while DNS fails or the station has no IP: lwip_getaddrinfo() gives EAI_FAIL
#   (202) and _getaddrinfo_inner() raises OSError(-202) (modsocket.c, "Per docs: instead of
#   raising gaierror getaddrinfo raises negative error number").
# - connect() without an IP: lwIP finds no route (ERR_RTE), errno EHOSTUNREACH (118 on the
#   ESP32's newlib, 113 here): errno.EHOSTUNREACH of this port.
# - a connect slower than the socket's timeout: socket_connect() gives up with ETIMEDOUT.
# - sockets open when the station lost its IP: ESP-IDF's esp_netif_down_api() sets the address
#   to 0.0.0.0 (components/esp_netif/lwip/esp_netif_lwip.c), so lwIP aborts their TCP PCBs
#   (tcp_netif_ip_addr_changed, ERR_ABRT): every later read or write raises ECONNABORTED (113
#   on the ESP32, 103 here), even once the Wi-Fi is back.
import errno
import io
import socket as _s  # the built-in module, imported before emu_boot installs this one
from time import sleep_ms  # the unix port's own

import emu_network

for _n in dir(_s):
    if not _n.startswith("__"):
        globals()[_n] = getattr(_s, _n)
_n = None
_EAI_FAIL = -202  # lwIP netdb.h EAI_FAIL, negated by modsocket.c


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    f = emu_network.faults()[0]
    if f & emu_network.DNS_DOWN or not emu_network.online():
        raise OSError(_EAI_FAIL)
    return _s.getaddrinfo(host, port, af, type, proto, flags)


class socket(io.IOBase):
    """socket(af, type, proto): a real socket of the unix port, with the ESP32's failures."""

    def __init__(self, af=_s.AF_INET, type=_s.SOCK_STREAM, proto=0):
        self._s = _s.socket(af, type, proto)
        self._drops = None  # the host's drop count when this socket connected
        self._t = None  # settimeout() value: None blocks

    def _check(self):
        d = self._drops
        if d is not None and d != emu_network.faults()[1]:
            raise OSError(errno.ECONNABORTED)

    def connect(self, addr):
        _, drops, ms, _ = emu_network.faults()
        if not emu_network.online():
            raise OSError(errno.EHOSTUNREACH)
        if ms:
            t = self._t
            if t is not None and ms > t * 1000:  # SYN unanswered until the socket's timeout
                sleep_ms(int(t * 1000))
                raise OSError(errno.ETIMEDOUT)
            sleep_ms(ms)
            if not emu_network.online():
                raise OSError(errno.EHOSTUNREACH)
        self._s.connect(addr)
        self._drops = drops

    def readinto(self, buf, n=-1):
        self._check()
        return self._s.readinto(buf) if n < 0 else self._s.readinto(buf, n)

    def read(self, n=-1):
        self._check()
        return self._s.read() if n < 0 else self._s.read(n)

    def write(self, buf, n=-1):
        self._check()
        return self._s.write(buf) if n < 0 else self._s.write(buf, n)

    def recv(self, n):
        self._check()
        return self._s.recv(n)

    def send(self, buf):
        self._check()
        return self._s.send(buf)

    def sendall(self, buf):
        self._check()
        return self._s.sendall(buf)

    def settimeout(self, t):
        self._t = t
        self._s.settimeout(t)

    def setblocking(self, flag):
        self._t = None if flag else 0
        self._s.setblocking(flag)

    def ioctl(self, op, arg):
        if op == 4:  # MP_STREAM_CLOSE: the tls module closes the socket under it this way
            self._s.close()
        return 0

    def close(self):
        self._s.close()

    def fileno(self):
        return self._s.fileno()

    def setsockopt(self, *args):
        return self._s.setsockopt(*args)

    def bind(self, addr):
        return self._s.bind(addr)

    def listen(self, n=2):
        return self._s.listen(n)

    def accept(self):
        return self._s.accept()

    def makefile(self, *args):
        return self
