"""The emulated ESP32 board: run one in the foreground, or drive one from tests.

`python -m upcert.emu.board run --state DIR` keeps a board running until SIGTERM/SIGINT and
prints `serial: <pty>`; unmodified mpremote drives that port like a real board's UART.
See boards/unix/README.md for how it works and how it differs from an ESP32.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from upcert.emu import config as emu_config
from upcert.emu import netfault
from upcert.errors import UpcertError
from upcert.paths import ROOT, find_micropython
from upcert.procs import alive, running_pid
from upcert.validate import open_private, private_dir, private_file, write_private

START_PY = ROOT / "boards" / "unix" / "emu" / "start.py"
# GC heap the stand-ins (emu_*.py, compiled at boot) occupy on the unix port; added to the
# configured heapsize so user code finds about as much free heap as on an ESP32.
EMU_HEAP_RESERVE = 58 * 1024
# ... and what the I2C bridge client (emu_i2c.py) adds on a board with an emulated ATECC608.
I2C_HEAP_RESERVE = 3 * 1024
# A board's state holds its private key and Wi-Fi password (flash.img, nvs.bin, part-*.bin,
# atecc608.json), so everything in it is the owner's only: files 0600, the folder 0700. The
# interpreter creates its images itself (boards/unix/emu/emu_flash.py, which cannot chmod), so
# the host process runs the board under umask 077; files made by an earlier version are
# tightened at each start.
STATE_UMASK = 0o077
STATE_FILES = ("board.json", "board.json.tmp", "flash.img", "nvs.bin", "rtc.bin",
               emu_config.POWERCUT, netfault.NETWORK, "atecc608.json", "serial.log", "host.log", "board.pid")


def secure_state(state_dir):
    """Tighten the board's own files in state_dir to 0600 (files of an earlier version)."""
    state = Path(state_dir)
    private_file(state, *STATE_FILES, *(p.name for p in state.glob("part-*.bin")))


def run(state_dir, *, heapsize=None, clock=None, ntp=None, atecc608=None):
    """Run a board in the foreground until SIGTERM or SIGINT (SIGUSR1 cuts its power).
    `atecc608` ("blank", "tng", "none") changes the board.json setting first. Everything the
    board and this process create in state_dir is 0600 (umask 077 while it runs)."""
    old_umask = os.umask(STATE_UMASK)
    try:
        return _run(state_dir, heapsize=heapsize, clock=clock, ntp=ntp, atecc608=atecc608)
    finally:
        os.umask(old_umask)


def _run(state_dir, *, heapsize, clock, ntp, atecc608):
    from upcert.emu.relay import Relay

    state = Path(state_dir).resolve()
    cfg = emu_config.load(state, heapsize=heapsize, clock=clock, ntp=ntp,
                               atecc608=atecc608)
    if not START_PY.exists():
        raise UpcertError(f"{START_PY} is missing: the emulated board needs the repository")
    flash = state / "flash.img"
    if flash.exists() and flash.stat().st_size != cfg["flash_size"]:
        raise UpcertError(f"{flash} has {flash.stat().st_size} bytes but board.json says "
                          f"flash_size {cfg['flash_size']}: fix flash_size or delete the image")
    pid_file, link = state / "board.pid", state / "serial"
    other = running_pid(pid_file)
    if other:
        raise UpcertError(f"a board already runs in {state} (pid {other}); stop it first "
                          "with `upcert board stop`")
    secure_state(state)
    chip, bridge = _fit_chip(state, cfg["atecc608"])
    heap = emu_config.heap_bytes(cfg["heapsize"]) + EMU_HEAP_RESERVE + (
        I2C_HEAP_RESERVE if chip else 0)
    command = [find_micropython(), "-X", f"heapsize={heap}", "-i", str(START_PY)]
    resolved = dict(cfg, partitions=emu_config.resolve_partitions(cfg))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(state), "TZ": "UTC",
           "LANG": "C", "UPCERT_BOARD_STATE": str(state), "UPCERT_BOARD": json.dumps(resolved)}

    def announce(port):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(port)
        try:
            print(f"serial: {port}", flush=True)
        except BrokenPipeError:  # whoever started us stopped listening; keep running
            pass
        if not sys.stdout.isatty():
            # Nothing else goes to stdout: a parent that read this line may close the pipe.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    emu_config.write_powercut(state, 0, cfg["power_cut_after_writes"], 0)
    netfault.reset(state)  # faults last until the board process stops; a power cut keeps them
    write_private(pid_file, f"{os.getpid()}\n")
    try:
        with open_private(state / "serial.log", "ab") as log:
            relay = Relay(state, cfg, command, env, log, announce)
            if chip:  # the chip shares the board's supply: a power cut resets it too
                relay._power_on = _also_power(chip, relay._power_on)
                chip.stamp = lambda: emu_config.read_powercut(state)[0]
                chip.on_cut = lambda: _cut_by_chip(state, relay)
            relay.run()
    finally:
        if bridge:
            bridge.close()
        for path in (link, pid_file):
            if path.is_symlink() or path.exists():
                path.unlink()


def _fit_chip(state, setting):
    """(chip, bridge) for board.json "atecc608": the emulated ATECC608 kept in
    <state>/atecc608.json and the I2C bridge at <state>/i2c.sock; (None, None) without one."""
    if not setting:
        return None, None
    from upcert.emu.atecc import Atecc608
    from upcert.emu.i2c_bridge import serve

    chip = Atecc608.open(state / "atecc608.json", setting["layout"], seed=str(state),
                         address=setting.get("address"))
    return chip, serve(state / "i2c.sock", [chip])


def _cut_by_chip(state, relay):
    # The chip's armed command count was reached (Atecc608.arm_cut; the bridge holds the reply
    # meanwhile): counted as a cut fired, the flash-write arm disarmed, the power cut within
    # the relay's next step, as SIGUSR1 does.
    count, _, fired = emu_config.read_powercut(state)
    emu_config.write_powercut(state, count, 0, fired + 1)
    relay.power_cut = True


def _also_power(chip, power_on):
    def power_on_with_chip(delay=0):
        chip.power_cycle()
        power_on(delay)

    return power_on_with_chip


def stop_board(state_dir):
    """SIGTERM the board running in `state_dir` and wait until it is gone. True if one ran."""
    pid = running_pid(Path(state_dir) / "board.pid")
    if not pid:
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        time.sleep(0.05)
        if not alive(pid):
            return True
    raise UpcertError(f"board process {pid} did not stop within 10 s; kill it with `kill -9 {pid}`")


class EmulatedBoard:
    """A board run by a background `python -m upcert.emu.board run` process.

    with EmulatedBoard(tmp_path / "b1") as board:
        subprocess.run(["mpremote", "connect", board.port, "exec", "print(1)"])
    """

    def __init__(self, state_dir, *, heapsize=None, clock=None, ntp=None, atecc608=None):
        self.state_dir = Path(state_dir).resolve()
        self.log_path = self.state_dir / "serial.log"
        self.port = None
        self._args = []
        for flag, value in (("--heapsize", heapsize), ("--clock", clock), ("--ntp", ntp),
                            ("--atecc608", atecc608)):
            if value is not None:
                self._args += [flag, value]
        self._proc = None

    def start(self, timeout_s=20):
        """Start the board; returns its serial port once the board is booted."""
        if self._proc is not None:
            return self.port
        private_dir(self.state_dir)
        err = open_private(self.state_dir / "host.log", "ab")
        cmd = [sys.executable, "-m", "upcert.emu.board", "run", "--state", str(self.state_dir)]
        self._proc = subprocess.Popen(cmd + self._args, stdout=subprocess.PIPE, stderr=err,
                                      start_new_session=True, cwd=str(ROOT), umask=STATE_UMASK)
        err.close()
        deadline = time.monotonic() + timeout_s
        line = b""
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.stop()
                tail = (self.state_dir / "host.log").read_text(errors="replace")[-2000:]
                raise UpcertError(f"board in {self.state_dir} did not start: {tail.strip()}")
            import select

            if select.select([self._proc.stdout], [], [], 0.1)[0]:
                line += os.read(self._proc.stdout.fileno(), 1)
        match = re.match(rb"serial: (\S+)", line)
        if not match:
            self.stop()
            raise UpcertError(f"unexpected output from the board process: {line!r}")
        self.port = match.group(1).decode()
        return self.port

    def log_text(self):
        """Everything the board printed (serial.log), decoded leniently."""
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_size(self):
        """Current length of serial.log in bytes: pass it as `since` to wait_for_log."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, mark):
        """What the board printed from byte `mark` of serial.log (a log_size()) on, decoded
        leniently."""
        try:
            return self.log_path.read_bytes()[mark:].decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text_or_regex, timeout_s=30, since=0):
        """Wait until serial.log (from byte `since`) contains the text or matches the regex
        (str or compiled); returns the log from `since` on. TimeoutError shows the tail."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                data = self.log_path.read_bytes()[since:]
            except FileNotFoundError:
                data = b""
            text = data.decode("utf-8", "replace")
            if isinstance(text_or_regex, re.Pattern):
                if text_or_regex.search(text):
                    return text
            elif text_or_regex in text:
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text_or_regex!r} not in {self.log_path} after "
                                   f"{timeout_s} s; last output:\n{text[-1500:]}")
            time.sleep(0.05)

    def wait_for_line(self, pattern, timeout_s=30, since=0):
        """The first line of serial.log (from byte `since`) matching the regex `pattern`."""
        rx = re.compile(pattern)
        text = self.wait_for_log(re.compile(pattern), timeout_s, since)
        return next(line for line in text.splitlines() if rx.search(line)).strip()

    def power_cut(self):
        """Cut the power: the interpreter dies at once and the board boots again."""
        if self._proc is None or self._proc.poll() is not None:
            raise UpcertError("the board is not running: call start() first")
        self._proc.send_signal(signal.SIGUSR1)

    def arm_power_cut(self, writes):
        """Cut the power right after the board's `writes`-th persistent write from now (flash
        erase or program, NVS commit); 0 disarms. Either way the write count restarts at 0.
        The board then boots again normally, disarmed. Needs a running board (to arm from the
        start, set power_cut_after_writes in board.json)."""
        if self._proc is None or self._proc.poll() is not None:
            raise UpcertError("the board is not running: call start() first, or set "
                              "power_cut_after_writes in board.json")
        if not isinstance(writes, int) or writes < 0:
            raise UpcertError(f"arm_power_cut({writes!r}): give a number of writes >= 0")
        emu_config.write_powercut(self.state_dir, 0, writes,
                                       emu_config.read_powercut(self.state_dir)[2])

    def chip_control(self, request, address=0x60):
        """A control request (dict) to the emulated ATECC608 at `address` on this board's I2C
        bridge (emu.atecc.Atecc608.control); its answer (dict)."""
        from upcert.emu.i2c_bridge import control

        if self._proc is None or self._proc.poll() is not None:
            raise UpcertError("the board is not running: call start() first")
        return control(self.state_dir / "i2c.sock", address, request)

    def arm_chip_cut(self, commands, address=0x60):
        """Cut the power right after the board's ATECC608 has run its `commands`-th command
        from now (any command; its effect on the chip's EEPROM is kept, its reply never reaches
        the board); 0 disarms. Either way the chip's command count and trace restart
        (chip_commands()). Counted in power_cuts()."""
        got = self.chip_control({"cut_after_commands": commands}, address)
        if "error" in got:
            raise UpcertError(f"arm_chip_cut({commands!r}): {got['error']}")

    def chip_commands(self, address=0x60):
        """Commands the chip ran since start() or the last arm_chip_cut(): {"count", "armed",
        "trace": [{"n", "cmd", "p1", "p2", "status", "eeprom", "writes"}]}: "eeprom" when the
        command changed the chip's EEPROM, "writes" the board's flash writes before it
        (write_count())."""
        return self.chip_control({"query": "commands"}, address)

    def write_count(self):
        """Persistent writes the board made since start() or the last arm_power_cut()."""
        return emu_config.read_powercut(self.state_dir)[0]

    def network(self, **faults):
        """Change the board's network faults while it runs and return them all (see
        upcert.emu.netfault.change): wifi=False takes the access point away (sockets aborted,
        DNS failing, the station retrying), wifi=True brings it back (the lease comes dhcp_ms
        later), dns=False makes lookups fail, connect_ms slows every TCP connect. No
        arguments: the faults as they are."""
        if faults:
            return netfault.change(self.state_dir, **faults)
        return netfault.read(self.state_dir)

    def power_cuts(self):
        """Power cuts injected by arm_power_cut()/power_cut_after_writes/arm_chip_cut() since
        start()."""
        return emu_config.read_powercut(self.state_dir)[2]

    def stop(self):
        """Stop the board (SIGTERM, then SIGKILL after 10 s). Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    """CLI: python -m upcert.emu.board run --state DIR [--heapsize 156K] [--clock set|unset]
    [--ntp ok|unreachable] [--atecc608 blank|tng|none]."""
    parser = argparse.ArgumentParser(prog="python -m upcert.emu.board",
                                     description="Run an emulated ESP32 board.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="run a board in the foreground until SIGTERM/SIGINT")
    p.add_argument("--state", required=True, help="the board's state folder")
    p.add_argument("--heapsize", help="MicroPython GC heap, e.g. 156K (default from board.json)")
    p.add_argument("--clock", choices=["set", "unset"], help="RTC at power-on")
    p.add_argument("--ntp", choices=["ok", "unreachable"], help="what ntptime.settime() does")
    p.add_argument("--atecc608", choices=["blank", "tng", "none"],
                   help="fit an emulated ATECC608 on I2C (blank at 0x60, Trust&Go-style at "
                        "0x35) or remove it; kept in board.json")
    args = parser.parse_args(argv)
    try:
        run(args.state, heapsize=args.heapsize, clock=args.clock, ntp=args.ntp,
            atecc608=args.atecc608)
    except UpcertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
