"""The host process of an emulated ESP32: a pty for mpremote, the unix port on a second pty.

Bytes are relayed both ways. The board asks for resets in-band ("\\x1b_upcert:WORD\\x1b\\\\"
on its stdout, see boards/unix/emu/emu_host.py); those escapes never reach the serial port.
"""

import errno
import os
import pty
import select
import signal
import sys
import time

from upcert.emu.config import read_powercut, reset_rtc, write_powercut
from upcert.emu.console import (
    MarkerFilter,
    ModeTracker,
    SerialPort,
    banner,
    board_tty,
    catches_sigint,
    nonblocking,
)
from upcert.errors import UpcertError

_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
_MAX_HELD = 1 << 20  # input held while the board boots; beyond this a UART would overflow
_MAX_OUT = 1 << 16  # output queued for a slow reader before the board has to wait
_PWRON, _WDT, _DEEPSLEEP, _SOFT = 1, 3, 4, 5  # machine.*_RESET on the ESP32 port


class Relay:
    """One board: call run() in the foreground; stop with SIGTERM/SIGINT, cut power with
    SIGUSR1. `announce(path)` is called once the board's first boot reached its REPL code."""

    def __init__(self, state, cfg, command, env, log, announce):
        self.state, self.cfg, self.command, self.env = state, cfg, command, env
        self.log, self.announce = log, announce
        self.serial = SerialPort()
        self.to_child, self.held = bytearray(), bytearray()
        self.pid = self.child_fd = None
        self.gate = False  # input reaches the interpreter only once it is past its setup
        self.raw_boot = 0  # 1: booting into the raw REPL, 2: after "repl", hiding the banner
        self.hold_out = bytearray()
        self.mode = ModeTracker()
        self.markers = MarkerFilter()
        self.cause, self.kill_reason, self.kill_delay = _PWRON, None, 0
        self.next_boot, self.restart_at = None, None  # (cause, banner), monotonic time
        self.wdt = None  # (timeout_s, deadline)
        self.ready = self.injected = False
        self.sigint_at = 0.0
        self.stopping = self.power_cut = False
        self.announced, self.started_at, self.early_deaths = False, time.monotonic(), 0

    # -- life cycle ---------------------------------------------------------------------------

    def run(self):
        """Relay until stopped. Raises UpcertError if the interpreter cannot start."""
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGUSR1, self._on_power_cut)
        try:
            self._power_on()
            while not self.stopping:
                self._step()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self._kill("stop")
            if self.child_fd is not None:
                self._reap()
            self.serial.close()

    def _on_stop(self, *_):
        self.stopping = True

    def _on_power_cut(self, *_):
        self.power_cut = True

    def _power_on(self, delay=0):
        """Power-on: the RTC restarts (unset: at 2000-01-01), then the ROM banner and a boot."""
        reset_rtc(self.state, self.cfg["clock"])
        self.wdt = None
        self.mode.set(False)
        self._schedule(_PWRON, banner("power"), delay)

    def _schedule(self, cause, text, delay=0):
        """Boot after `delay` seconds (None: only a power cut wakes the board)."""
        self.next_boot = (cause, text)
        self.restart_at = None if delay is None else time.monotonic() + delay

    def _boot(self, cause, text):
        self.cause = cause
        self._emit(text)
        self._spawn()

    def _spawn(self):
        self.raw_boot = 1 if self.mode.raw else 0
        env = dict(self.env, UPCERT_RESET_CAUSE=str(self.cause),
                   UPCERT_BOOT_MODE="raw" if self.mode.raw else "friendly")
        pid, fd = pty.fork()
        if pid == 0:  # the child: becomes the interpreter, with this pty as its console
            try:
                board_tty(0)
                os.umask(0o077)  # the images it makes hold the key: 0600 (emulator.STATE_UMASK)
                os.chdir(self.state)
                os.execve(self.command[0], self.command, env)
            except BaseException as e:  # nothing may escape a forked child
                os.write(2, f"cannot start {self.command[0]}: {e}\r\n".encode())
            os._exit(127)
        nonblocking(fd)
        self.pid, self.child_fd, self.gate, self.ready = pid, fd, False, False
        self.spawned_at = time.monotonic()
        self.markers.reset()
        self.hold_out.clear()
        self.to_child.clear()

    def _kill(self, reason, delay=0):
        """Stop the interpreter at once (SIGKILL: nothing gets flushed, like a reset)."""
        if self.pid is not None and self.kill_reason is None:
            self.kill_reason, self.kill_delay = reason, delay
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _reap(self):
        """The interpreter's pty closed: collect it and boot again as the reason says."""
        os.close(self.child_fd)
        _, status = os.waitpid(self.pid, 0)
        reason = self.kill_reason
        lived = time.monotonic() - self.spawned_at
        self.pid = self.child_fd = None
        self.kill_reason, self.gate, self.raw_boot = None, False, 0
        self.to_child.clear()
        if reason == "stop":
            return
        if reason is None:
            if os.WIFEXITED(status) and os.waitstatus_to_exitcode(status) == 127 and not self.ready:
                raise UpcertError(f"the board's interpreter could not start: {self.command[0]} "
                                  f"(see {self.state / 'serial.log'})")
            reason = "soft" if os.WIFEXITED(status) else "panic"
        self.early_deaths = self.early_deaths + 1 if not self.ready and lived < 2 else 0
        delay = 0
        if self.early_deaths >= 3:
            delay = 2
            print(f"board {self.state}: the interpreter keeps dying at boot; retrying in 2 s "
                  f"(see {self.state / 'serial.log'})", file=sys.stderr)
        if reason == "power":
            self._power_on(delay)
        elif reason == "soft":
            # A soft reset keeps the chip, its reset cause, REPL mode and watchdog.
            self._emit(b"MPY: soft reboot\r\n")
            self._schedule(self.cause, b"", delay)
        else:
            self.wdt = None
            self.mode.set(False)
            if reason == "panic":
                sig = signal.Signals(os.WTERMSIG(status)).name
                self._emit(f"\r\nGuru Meditation Error: interpreter killed by {sig}\r\n"
                           "Rebooting...\r\n".encode())
            if reason == "deepsleep":
                self._schedule(_DEEPSLEEP, banner("deepsleep"), self.kill_delay or None)
            elif reason == "bootloader":
                self._emit(banner("download"))
                self._schedule(_PWRON, b"", None)
            else:
                self._schedule(_WDT if reason == "wdt" else _SOFT, banner(reason), delay)

    # -- the relay loop -------------------------------------------------------------------------

    def _step(self):
        if self.power_cut:
            self.power_cut = False
            if self.pid is None:  # asleep or in the bootloader: boots at once
                self._power_on()
            else:
                self._kill("power")
        now = time.monotonic()
        if self.pid is None and self.restart_at is not None and now >= self.restart_at:
            self.restart_at = None
            self._boot(*self.next_boot)
        if self.wdt and now >= self.wdt[1]:
            self.wdt = None
            self._kill("wdt")
        if not self.announced and (self.ready or now - self.started_at > 15):
            self.announced = True
            self.announce(self.serial.port)
        serial = self.serial
        serial.check()
        rlist, wlist = [], []
        if self.child_fd is not None:
            if len(serial.queue) < _MAX_OUT:  # else the board waits, as on a busy UART
                rlist.append(self.child_fd)
            if self.to_child:
                wlist.append(self.child_fd)
        if serial.listening:
            rlist.append(serial.fd)
            if serial.queue:
                wlist.append(serial.fd)
        # Signals (stop, power cut) are handled within 50 ms of arriving.
        r, w, _ = select.select(rlist, wlist, [], 0.05)
        if self.child_fd in w:
            self._write_child()
        if serial.fd in w:
            serial.write()
        if serial.fd in r:
            self._read_serial()
        if self.child_fd is not None and self.child_fd in r:
            self._read_child()
        elif not r and self.markers.pending():
            self._from_child(self.markers.flush())

    def _read_serial(self):
        data = self.serial.read()
        if self.gate:
            self._deliver(data)
        elif len(self.held) < _MAX_HELD:
            self.held += data

    def _deliver(self, data):
        """Pass input to the interpreter. A Ctrl-C becomes SIGINT while the interpreter
        catches SIGINT (it runs code and kbd_intr is on), as a board's UART driver raises
        KeyboardInterrupt then; otherwise (REPL prompt, kbd_intr(-1)) it is a plain byte."""
        while data:
            i = data.find(3)
            if i < 0:
                self.to_child += data
                return
            self.to_child += data[:i]
            if self._running_code():
                # The unix port exits if a second SIGINT comes before it raised the first.
                if time.monotonic() - self.sigint_at > 0.25:
                    self.sigint_at = time.monotonic()
                    self._write_child()
                    os.kill(self.pid, signal.SIGINT)
            else:
                self.to_child += b"\x03"
            data = data[i + 1:]

    def _running_code(self):
        """Is the interpreter running code with Ctrl-C enabled? Asked twice 20 ms apart: the
        REPL also installs its SIGINT handler for the instant it runs a typed line (an empty
        one too), and a SIGINT arriving just after it is removed again kills the port."""
        if not catches_sigint(self.pid):
            return False
        time.sleep(0.02)
        return catches_sigint(self.pid)

    def _write_child(self):
        try:
            n = os.write(self.child_fd, self.to_child)
        except BlockingIOError:
            return
        except OSError:
            n = len(self.to_child)
        del self.to_child[:n]

    def _read_child(self):
        try:
            data = os.read(self.child_fd, 65536)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._from_child(self.markers.flush())
            self._reap()
            return
        self._from_child(self.markers.feed(data))

    def _from_child(self, events):
        for kind, value in events:
            if kind == "data":
                self._child_output(value)
            else:
                self._request(value)

    def _child_output(self, data):
        if self.raw_boot == 2:
            # Booting into the raw REPL: the unix port first shows its friendly banner and
            # ">>> "; answer it with Ctrl-A and show only what a board prints from then on.
            self.hold_out += data
            if b">>> " in self.hold_out and not self.injected:
                self.injected = True
                self.to_child[:0] = b"\x01"
            i = self.hold_out.find(_RAW_BANNER)
            if i < 0:
                return
            data = bytes(self.hold_out[i:])
            self.hold_out.clear()
            self.raw_boot = 0
            self._open_gate()
        self._emit(data)

    def _request(self, word):
        if word == "ready":
            self.ready = True
            if not self.raw_boot:
                self._open_gate()
        elif word == "repl":
            if self.raw_boot == 1:
                self.raw_boot, self.injected = 2, False
        elif word == "cut":  # the armed write count was reached (emu_cut.py): disarm, cut
            count, _, fired = read_powercut(self.state)
            write_powercut(self.state, count, 0, fired + 1)
            self._kill("power")
        elif word in ("hard", "soft", "bootloader"):
            self._kill(word)
        elif word.startswith("deepsleep:"):
            self._kill("deepsleep", int(word[10:]) / 1000)
        elif word.startswith("wdt:"):
            timeout = int(word[4:]) / 1000
            self.wdt = (timeout, time.monotonic() + timeout)
        elif word == "feed" and self.wdt:
            self.wdt = (self.wdt[0], time.monotonic() + self.wdt[0])

    def _open_gate(self):
        self.gate = True
        held, self.held = bytes(self.held), bytearray()
        self._deliver(held)

    def _emit(self, data):
        """Board output: to serial.log always, to the serial port when someone listens."""
        if not data:
            return
        self.mode.feed(data)
        self.log.write(data)
        self.log.flush()
        self.serial.write(data)
