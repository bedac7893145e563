# Boot sequence of the emulated ESP32, called by start.py inside the unix port: open the state
# files while the host filesystem is mounted, install the stand-ins in sys.modules, swap the
# root for the littlefs flash image, then run boot.py and main.py the way ports/esp32/main.c,
# modules/_boot.py and modules/inisetup.py do.
import gc
import hashlib
import json
import os
import sys

import emu_cut
import emu_esp32
import emu_host
import emu_machine
import emu_network
import emu_ntptime
import emu_nvs
import emu_partition
import emu_rtc
import emu_socket
import emu_time
import vfs
from emu_flash import FlashFile, open_image

_FORCED_EXIT = 0x100  # shared/runtime/pyexec.h PYEXEC_FORCED_EXIT
_BOOT_PY = """\
# This file is executed on every boot (including wake-boot from deepsleep)
#import esp
#esp.osdebug(None)
#import webrepl
#webrepl.start()
"""
_CORRUPTED = """\
The filesystem appears to be corrupted. If you had important data there, you
may want to make a flash snapshot to try to recover it. Otherwise, perform
factory reprogramming of MicroPython firmware (completely erase flash, followed
by firmware programming).
"""


def _open_state(state, cfg):
    """Open every state file (flash, NVS, partitions, RTC) and install the stand-ins."""
    try:  # made by the host at start; counts writes for power-cut injection (emu_cut.py)
        emu_cut.install(open(state + "/powercut.bin", "r+b"))
    except OSError:
        pass
    try:  # the host's network faults (emu_network.py); absent: a network that never fails
        emu_network.install(open(state + "/network.bin", "rb"))
    except OSError:
        pass
    flash = FlashFile(open_image(state + "/flash.img", cfg["flash_size"]), cfg["flash_size"])
    nvs = FlashFile(open_image(state + "/nvs.bin", cfg["nvs_size"]), cfg["nvs_size"])
    entries = []
    for p in cfg["partitions"]:
        label, size = p["label"], p["size"]
        if label == "vfs":
            dev = flash
        elif label == "nvs":
            dev = nvs
        else:
            dev = FlashFile(open_image(state + "/part-" + label + ".bin", size), size)
        entries.append((label, p["type"], p["subtype"], p["offset"], size, dev))
    emu_partition.install(entries)
    emu_nvs.install(emu_nvs.NvsStore(nvs, cfg["nvs_size"]).load())
    emu_rtc.install(open_image(state + "/rtc.bin", 8))
    uid = b"\x24\x0a\xc4" + hashlib.sha256(state.encode()).digest()[:3]
    emu_machine.configure(int(os.getenv("UPCERT_RESET_CAUSE") or 1), uid)
    emu_ntptime.configure(cfg["ntp"] == "ok")
    if cfg.get("atecc608"):  # the host serves the board's I2C devices on this socket
        import emu_i2c

        emu_i2c.connect(state + "/i2c.sock")  # connects at the first transfer
    for name, mod in (("esp32", emu_esp32), ("machine", emu_machine), ("network", emu_network),
                      ("ntptime", emu_ntptime), ("socket", emu_socket), ("usocket", emu_socket),
                      ("time", emu_time)):
        sys.modules[name] = mod
    sys.modules["utime"] = emu_time
    sys.modules["umachine"] = emu_machine
    return flash


def _erased(flash):
    buf = bytearray(4096)
    flash.readblocks(0, buf)
    return buf == b"\xff" * 4096


def _mount(flash):
    """Mount the flash at /, formatting a blank one (modules/_boot.py, modules/inisetup.py)."""
    try:
        vfs.mount(vfs.VfsLfs2(flash), "/")
    except OSError:
        if not _erased(flash):
            emu_host.request(b"ready")
            try:
                while True:
                    print(_CORRUPTED)
                    emu_time.sleep(3)
            except KeyboardInterrupt:
                print("KeyboardInterrupt")
                return False
        print("Performing initial setup")
        vfs.VfsLfs2.mkfs(flash)
        vfs.mount(vfs.VfsLfs2(flash), "/")
        with open("/boot.py", "w") as f:
            f.write(_BOOT_PY)
    return True


def _run(name, g, ready=False):
    """pyexec_file_if_exists(): 1 on success or no file, 0 after an exception, FORCED_EXIT
    after machine.soft_reset(). Tracebacks print without this module's frame. With `ready`,
    input typed during the boot is let in only now, inside the try: a Ctrl-C held since the
    power-on interrupts boot.py (as on a board), never the mount or this setup."""
    try:
        with open(name) as f:
            code = f.read()
    except OSError:
        if ready:
            emu_host.request(b"ready")
        return 1
    g["__file__"] = name
    try:
        if ready:
            emu_host.request(b"ready")
        code = compile(code, name, "exec")
        gc.collect()
        exec(code, g)
        return 1
    except SystemExit:
        return _FORCED_EXIT if emu_machine.soft_reset_requested() else 0
    except BaseException as e:  # a board prints KeyboardInterrupt too
        import io

        buf = io.StringIO()
        sys.print_exception(e, buf)
        for line in buf.getvalue().split("\n"):
            if line and "emu_boot.py" not in line:
                print(line)
        return 0


def _sweep(g):
    """What gc_sweep_all() does at an ESP32 soft reset: finalise every object, so files the
    program left open are closed (and flushed to littlefs) before the interpreter ends."""
    g.clear()
    for name in list(sys.modules):
        if not name.startswith("emu_") and "/boards/unix/emu/" not in str(
                getattr(sys.modules[name], "__file__", "/boards/unix/emu/")):
            del sys.modules[name]
    gc.collect()


def boot(g):
    """Run the board: `g` is the REPL's global namespace (start.py's globals)."""
    sys.path.pop(0)  # start.py put the stand-ins' directory there
    state, cfg = os.getenv("UPCERT_BOARD_STATE"), os.getenv("UPCERT_BOARD")
    if not state or not cfg:
        print("start.py must be run by the emulator host: python -m upcert.emu.board run --state DIR")
        return
    raw_repl = os.getenv("UPCERT_BOOT_MODE") == "raw"
    emu_host.attach(sys.stdout.buffer)
    flash = _open_state(state, json.loads(cfg))
    vfs.umount("/")
    mounted = _mount(flash)
    try:
        os.chdir("/")
    except OSError:
        pass
    sys.path[:] = ["", ".frozen", "/lib"]
    g.clear()
    g["__name__"] = "__main__"
    gc.collect()
    ret = _run("boot.py", g, True) if mounted else 1  # mounted False: "ready" already sent
    if ret != _FORCED_EXIT and not raw_repl and ret:
        # Since MicroPython 1.22 main.py is skipped when boot.py fails (PR #12662).
        ret = _run("main.py", g) if mounted else 1
    if ret == _FORCED_EXIT:
        _sweep(g)
        emu_host.request(b"soft")
        emu_host.halt()
    sys.atexit(lambda: _sweep(g))  # the REPL ends the interpreter for a soft reset
    gc.collect()
    emu_host.request(b"repl")
