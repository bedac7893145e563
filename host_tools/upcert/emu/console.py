"""The emulated board's console: the serial pty mpremote opens, the line settings of the
interpreter's pty, in-band requests from the board, REPL-mode tracking, and the ESP32 ROM
banners printed at each reset."""

import fcntl
import os
import select
import signal
import termios

_MARK = b"\x1b_upcert:"
_END = b"\x1b\\"
_MAX_WORD = 64
_RAW = b"raw REPL; CTRL-B to exit\r\n"
_FRIENDLY = b'Type "help()" for more information.'
# The ESP32 ROM prints these after a reset (ESP32 TRM "Reset and Clock"; rst codes 0x1,
# 0x5, 0x7, 0xc). MicroPython itself prints nothing more until its REPL banner.
_RESETS = {
    "power": b"rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    "deepsleep": b"rst:0x5 (DEEPSLEEP_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    "wdt": b"rst:0x7 (TG0WDT_SYS_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    "hard": b"rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    "panic": b"rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    "download": b"rst:0x1 (POWERON_RESET),boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))",
}


def banner(kind):
    """The lines an ESP32 prints on its console after a reset of this kind."""
    text = b"ets Jun  8 2016 00:22:57\r\n\r\n" + _RESETS[kind] + b"\r\n"
    if kind == "download":
        text += b"waiting for download\r\n"
    return text


class MarkerFilter:
    """Splits the board's output into ("data", bytes) and ("word", str) events; a request
    is b"\\x1b_upcert:" WORD b"\\x1b\\\\". A partial escape at the end waits for more."""

    def __init__(self):
        self._tail = b""

    def reset(self):
        self._tail = b""

    def pending(self):
        return bool(self._tail)

    def flush(self):
        """Give up waiting: what was held back is plain output."""
        tail, self._tail = self._tail, b""
        return [("data", tail)] if tail else []

    def feed(self, data):
        buf, self._tail, events = self._tail + data, b"", []
        while buf:
            i = buf.find(_MARK)
            if i < 0:
                k = _partial(buf)
                events.append(("data", buf[:len(buf) - k]))
                self._tail = buf[len(buf) - k:]
                break
            if i:
                events.append(("data", buf[:i]))
            j = buf.find(_END, i + len(_MARK))
            if j < 0:
                if len(buf) - i > len(_MARK) + _MAX_WORD:  # not one of ours after all
                    events.append(("data", buf[i:]))
                else:
                    self._tail = buf[i:]
                break
            events.append(("word", buf[i + len(_MARK):j].decode("ascii", "replace")))
            buf = buf[j + len(_END):]
        return [e for e in events if e[1] or e[0] == "word"]


def _partial(buf):
    """Length of the longest end of `buf` that could begin a request escape."""
    for k in range(min(len(buf), len(_MARK) - 1), 0, -1):
        if buf.endswith(_MARK[:k]):
            return k
    return 0


class ModeTracker:
    """Which REPL the board shows (raw or friendly), from what the REPL itself prints; a
    soft reset keeps it, as ports/esp32/main.c keeps pyexec_mode_kind."""

    def __init__(self):
        self.raw = False
        self._tail = b""

    def set(self, raw):
        """Force the mode (a chip reset always starts in the friendly REPL)."""
        self.raw, self._tail = raw, b""

    def feed(self, data):
        window = self._tail + data
        r, f = window.rfind(_RAW), window.rfind(_FRIENDLY)
        if r != f:
            self.raw = r > f
        self._tail = window[-64:]


def nonblocking(fd):
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


def board_tty(fd):
    """Line settings of a board's pty: no echo, no line editing, no output processing and no
    signals: every byte reaches the reader (the relay turns Ctrl-C into SIGINT itself)."""
    a = termios.tcgetattr(fd)
    a[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON
              | termios.IXOFF | termios.INLCR | termios.IGNCR)
    a[1] &= ~termios.OPOST
    a[2] = (a[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    a[3] = 0
    a[6][termios.VMIN], a[6][termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, a)


class SerialPort:
    """The board's UART as a pty: `port` is the device path mpremote opens. Output waits in
    `queue` for a slow reader (as a board waits on its UART); with nobody listening it is
    dropped, and bytes the last reader left unread are flushed."""

    def __init__(self):
        self.fd, slave = os.openpty()
        board_tty(slave)  # raw until pyserial applies its own settings
        self.port = os.ttyname(slave)
        os.close(slave)  # nobody listens until a program opens the port
        nonblocking(self.fd)
        self._poller = select.poll()
        self._poller.register(self.fd, select.POLLIN)
        self.listening = False
        self.queue = bytearray()

    def check(self):
        """Update `listening`: the pty master reports POLLHUP while nobody has it open."""
        hup = any(ev & select.POLLHUP for _, ev in self._poller.poll(0))
        if hup and self.listening:
            self.queue.clear()
            try:
                fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
                termios.tcflush(fd, termios.TCIFLUSH)
                os.close(fd)
            except OSError:
                pass
        self.listening = not hup

    def write(self, data=b""):
        """Queue `data` (if someone listens) and send what the pty accepts now."""
        if not self.listening:
            return
        self.queue += data
        try:
            n = os.write(self.fd, self.queue)
        except BlockingIOError:
            return
        except OSError:  # the reader went away: its bytes are lost, as on a UART
            n = len(self.queue)
        del self.queue[:n]

    def read(self):
        """Bytes typed by the reader (b"" if none or it just left)."""
        try:
            return os.read(self.fd, 4096)
        except OSError:
            return b""

    def close(self):
        os.close(self.fd)


def catches_sigint(pid):
    """Has the unix port `pid` installed its SIGINT handler? It does while running code with
    Ctrl-C enabled and restores SIG_DFL otherwise, when a SIGINT would kill it."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except (OSError, ValueError):
        pass
    return False
