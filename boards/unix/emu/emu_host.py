# Requests from the emulated board to its host process (upcert.emulator_relay), sent in-band
# on stdout as APC escapes ("\x1b_upcert:WORD\x1b\\") that the host strips from the serial output.
import sys

_out = None  # a binary stream; set by emu_boot when running under the host process
_CUT = b"\x1b_upcert:cut\x1b\\"  # built once: power_cut() must not allocate


def attach(stream):
    """Send requests to `stream` (the interpreter's stdout when the host supervises it)."""
    global _out
    _out = stream


def request(word):
    """Send one request (bytes such as b"hard", b"soft", b"ready", b"repl", b"wdt:5000")."""
    if _out is None:
        raise OSError(95, "needs the emulator host process: run the board with `upcert board run`")
    _out.write(b"\x1b_upcert:" + word + b"\x1b\\")


def halt():
    """Wait for the host to stop this interpreter (the request before this one said why)."""
    import time

    while True:
        try:
            time.sleep(1)
        except KeyboardInterrupt:
            # A reset cannot be interrupted on a real chip either.
            pass


def power_cut():
    """Ask the host to cut the power now and spin until it does, so that nothing more is
    written. Allocates nothing: it may run inside a flash write with the heap locked."""
    _out.write(_CUT)
    while True:
        try:
            while True:
                pass
        except KeyboardInterrupt:  # a Ctrl-C cannot stop a power cut
            pass


def host_attached():
    """True when a host process supervises this interpreter."""
    return _out is not None


def write_err(text):
    """Print a line on the board's console (stderr goes to the same serial device)."""
    sys.stdout.write(text + "\n")
