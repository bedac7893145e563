"""The emulated ESP32 (upcert.emu.board) driven by the real mpremote CLI over its pty."""

import os
import re
import subprocess
import time

import pytest
from upcert.emu.board import EmulatedBoard, main, stop_board
from upcert.errors import UpcertError

from tests.tools import require


@pytest.fixture(scope="module")
def tools():
    return {"micropython": require("micropython"), "mpremote": require("mpremote")}


def mpr(board, *args, check=True, timeout=60):
    """Run `mpremote connect <port> ARGS...`; returns stdout."""
    mp = require("mpremote")
    proc = subprocess.run([mp, "connect", board.port, *args], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"mpremote {args} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}\n--- serial.log tail ---\n{board.log_text()[-2000:]}")
    return proc.stdout


@pytest.fixture
def board(tools, tmp_path):
    with EmulatedBoard(tmp_path / "board") as b:
        yield b


def test_exec_and_repl_namespace(board):
    assert mpr(board, "exec", "print(1+1)").strip() == "2"
    names = mpr(board, "exec", "print(sorted(k for k in globals() if 'emu' in k or k == 'sys'))")
    assert names.strip() == "[]"
    assert os.readlink(board.state_dir / "serial") == board.port
    assert int((board.state_dir / "board.pid").read_text()) > 0


def test_friendly_ctrl_d_runs_main_and_free_heap(board, tmp_path):
    import serial  # pyserial, as mpremote uses it

    main_py = tmp_path / "main.py"
    main_py.write_text("print('main after ctrl-d')\n")
    mpr(board, "fs", "cp", str(main_py), ":main.py")
    # mpremote leaves the friendly REPL behind; Ctrl-D there soft-resets and runs main.py.
    with serial.Serial(str(board.state_dir / "serial"), 115200, timeout=5) as port:
        mark = board.log_size()
        port.write(b"\r\x04")
        board.wait_for_log("main after ctrl-d", since=mark)
        text = board.wait_for_log(">>> ", since=mark)
        assert "MPY: soft reboot" in text and "\x1b_upcert" not in text
    out = mpr(board, "exec", "import gc; gc.collect(); print(gc.mem_free())")
    # The default heap (156K: an ESP32's heap grown once, in 64-bit terms), a few KB in use.
    assert 146 * 1024 <= int(out) <= 156 * 1024, out


def test_boot_py_error_skips_main(board, tmp_path):
    (tmp_path / "boot.py").write_text("raise ValueError('bad boot')\n")
    (tmp_path / "main.py").write_text("print('main must not run')\n")
    mpr(board, "fs", "cp", str(tmp_path / "boot.py"), ":boot.py")
    mpr(board, "fs", "cp", str(tmp_path / "main.py"), ":main.py")
    mark = board.log_size()
    mpr(board, "reset")
    text = board.wait_for_log(">>> ", since=mark)
    assert 'File "boot.py", line 1' in text and "ValueError: bad boot" in text
    assert "main must not run" not in text and "emu_boot" not in text


def test_watchdog_deepsleep_and_bootloader(board):
    mark = board.log_size()
    # Long enough for mpremote to finish first: a reset mid-command hangs it (as on a board).
    mpr(board, "exec", "import machine; machine.WDT(timeout=1500)")
    board.wait_for_log("rst:0x7 (TG0WDT_SYS_RESET)", since=mark)
    assert mpr(board, "exec", "import machine; print(machine.reset_cause())").strip() == "3"
    mark = board.log_size()
    mpr(board, "exec", "--no-follow", "import machine; machine.deepsleep(200)")
    board.wait_for_log("rst:0x5 (DEEPSLEEP_RESET)", since=mark)
    assert mpr(board, "exec", "import machine; print(machine.reset_cause())").strip() == "4"
    mark = board.log_size()
    mpr(board, "bootloader")
    board.wait_for_log("waiting for download", since=mark)
    board.power_cut()  # the only way out of the ROM bootloader without a flasher
    board.wait_for_log("rst:0x1 (POWERON_RESET)", since=mark)
    assert mpr(board, "exec", "import machine; print(machine.reset_cause())").strip() == "1"


def test_fs_cp_roundtrip_and_ls(board, tmp_path):
    data = os.urandom(6000) + bytes(range(256)) * 4  # every byte value, control bytes too
    src, back = tmp_path / "blob.bin", tmp_path / "back.bin"
    src.write_bytes(data)
    mpr(board, "fs", "mkdir", ":lib")
    mpr(board, "fs", "cp", str(src), ":lib/blob.bin")
    mpr(board, "fs", "cp", ":lib/blob.bin", str(back))
    assert back.read_bytes() == data
    listing = mpr(board, "fs", "ls", ":lib")
    assert re.search(rf"\b{len(data)} blob.bin", listing), listing
    assert "boot.py" in mpr(board, "fs", "ls"), "first boot must create boot.py"


def test_mpremote_mount_passes_every_byte(board, tmp_path):
    # mpremote mount runs its protocol with kbd_intr(-1): a 0x03 byte must stay data.
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "all.bin").write_bytes(bytes(range(256)) * 8)
    out = mpr(board, "mount", str(tmp_path / "m"), "exec",
              "print(open('/remote/all.bin','rb').read() == bytes(range(256)) * 8)")
    assert out.strip().endswith("True"), out
    assert mpr(board, "exec", "print('still alive')").strip() == "still alive"


def test_ctrl_c_is_data_after_kbd_intr_off(board):
    import serial

    with serial.Serial(board.port, 115200, timeout=5) as port:
        port.write(b"\r\x03\r\x01")
        assert port.read_until(b"raw REPL; CTRL-B to exit\r\n>").endswith(b">")
        port.write(b"import micropython, sys\nmicropython.kbd_intr(-1)\nprint('go')\n"
                   b"print(sys.stdin.buffer.read(3))\nmicropython.kbd_intr(3)\x04")
        assert port.read_until(b"go\n") == b"OKgo\n"
        port.write(b"a\x03b")
        assert port.read_until(b"\x04") == b"b'a\\x03b'\n\x04"
    assert "Guru Meditation" not in board.log_text()


def test_soft_reset_keeps_files_and_restart_keeps_flash(board, tmp_path):
    mpr(board, "exec", "open('keep.txt','w').write('kept')")
    mark = board.log_size()
    mpr(board, "soft-reset")
    board.wait_for_log("MPY: soft reboot", since=mark)
    assert mpr(board, "exec", "print(open('keep.txt').read())").strip() == "kept"
    board.stop()
    board.start()
    assert mpr(board, "exec", "print(open('keep.txt').read())").strip() == "kept"


def test_main_runs_at_hard_reset_and_reset_cause(board, tmp_path):
    main_py = tmp_path / "main.py"
    main_py.write_text("import machine\nprint('main ran, cause', machine.reset_cause())\n")
    mpr(board, "fs", "cp", str(main_py), ":main.py")
    mark = board.log_size()
    mpr(board, "reset")
    text = board.wait_for_log("main ran, cause 5", since=mark)
    assert "rst:0xc (SW_CPU_RESET)" in text
    # A raw-REPL soft reset (every mpremote command does one) must not run main.py.
    mark = board.log_size()
    assert mpr(board, "exec", "import machine; print(machine.reset_cause())").strip() == "5"
    assert "main ran" not in board.log_text()[mark:]


def test_mpremote_interrupts_endless_main(board, tmp_path):
    main_py = tmp_path / "main.py"
    # The board's endless program, not a wait of the test's: only a Ctrl-C ends it.
    main_py.write_text("import time\nprint('looping')\nwhile True:\n    time.sleep_ms(20)\n")
    mpr(board, "fs", "cp", str(main_py), ":main.py")
    mark = board.log_size()
    mpr(board, "reset")
    board.wait_for_log("looping", since=mark)
    started = time.monotonic()
    assert mpr(board, "exec", "print('alive')").strip() == "alive"
    assert time.monotonic() - started < 10
    assert "KeyboardInterrupt" in board.log_text()[mark:]


def test_power_cut_keeps_committed_nvs_only(board, tmp_path):
    main_py = tmp_path / "main.py"
    main_py.write_text(
        "import esp32, time\n"
        "n = esp32.NVS('upcert')\n"
        "n.set_blob('cert', b'committed')\n"
        "n.commit()\n"
        "n.set_blob('key', b'not committed')\n"
        "open('after.txt', 'w').write('written')\n"
        "print('ready for the cut')\n"
        "while True:\n"
        "    time.sleep_ms(20)\n")  # the board idles until the cut (not a wait of the test's)
    mpr(board, "fs", "cp", str(main_py), ":main.py")
    mark = board.log_size()
    mpr(board, "reset")
    board.wait_for_log("ready for the cut", since=mark)
    mark = board.log_size()
    board.power_cut()
    board.wait_for_log("rst:0x1 (POWERON_RESET)", since=mark)
    board.wait_for_log("ready for the cut", since=mark)  # main.py runs again after power-on
    out = mpr(board, "exec", """
import esp32, machine
n = esp32.NVS('upcert')
b = bytearray(64)
print(machine.reset_cause(), bytes(b[:n.get_blob('cert', b)]), open('after.txt').read())
try:
    n.get_blob('key', b)
except OSError as e:
    print('key', e.args[0])
""")
    assert out.split() == ["1", "b'committed'", "written", "key", "-4354"], out


def test_two_boards_at_once(tools, tmp_path):
    with EmulatedBoard(tmp_path / "a") as a, EmulatedBoard(tmp_path / "b") as b:
        assert a.port != b.port
        mpr(a, "exec", "open('who','w').write('a')")
        mpr(b, "exec", "open('who','w').write('b')")
        code = "import machine; print(open('who').read(), machine.unique_id().hex())"
        wa, ida = mpr(a, "exec", code).split()
        wb, idb = mpr(b, "exec", code).split()
        assert (wa, wb) == ("a", "b")
        assert ida != idb and len(bytes.fromhex(ida)) == 6


def test_clock_unset_starts_in_2000_until_ntp(tools, tmp_path):
    with EmulatedBoard(tmp_path / "c", clock="unset") as board:
        out = mpr(board, "exec", "import time; print(time.time(), time.gmtime()[0])").split()
        assert 946684800 <= int(out[0]) < 946684800 + 3600 and out[1] == "2000"
        now = mpr(board, "exec", "import ntptime, time; ntptime.settime(); print(time.time())")
        assert abs(int(now) - time.time()) < 5
        # The RTC survives a soft reset and a machine.reset(), not a power cut.
        mark = board.log_size()
        mpr(board, "reset")
        board.wait_for_log('Type "help()"', since=mark)  # booted again: its REPL's banner
        assert abs(int(mpr(board, "exec", "import time; print(time.time())")) - time.time()) < 5
        mark = board.log_size()
        board.power_cut()
        board.wait_for_log("Type \"help()\"", since=mark)
        assert int(mpr(board, "exec", "import time; print(time.time())")) < 946684800 + 3600


def test_ntp_unreachable_times_out(tools, tmp_path):
    with EmulatedBoard(tmp_path / "n", ntp="unreachable") as board:
        out = mpr(board, "exec", """
import ntptime, errno
try:
    ntptime.settime()
except OSError as e:
    print(e.args[0] == errno.ETIMEDOUT)
""")
        assert out.strip() == "True"


def test_output_without_listener_does_not_block(board, tmp_path):
    main_py = tmp_path / "main.py"
    main_py.write_text("for i in range(3000):\n    print('line', i, 'x' * 60)\n"
                       "open('done.txt', 'w').write('yes')\n")
    mpr(board, "fs", "cp", str(main_py), ":main.py")
    mark = board.log_size()
    mpr(board, "reset")
    board.wait_for_log("line 2999", since=mark, timeout_s=60)
    assert mpr(board, "exec", "print(open('done.txt').read())").strip() == "yes"


def test_stop_board_and_cleanup(tools, tmp_path):
    board = EmulatedBoard(tmp_path / "s")
    board.start()
    assert stop_board(board.state_dir) is True
    assert not (board.state_dir / "serial").exists()
    assert not (board.state_dir / "board.pid").exists()
    assert stop_board(board.state_dir) is False
    board.stop()
    board.stop()  # idempotent


def test_bad_settings_give_actionable_errors(tmp_path, capsys):
    assert main(["run", "--state", str(tmp_path / "x"), "--heapsize", "lots"]) == 2
    assert "heapsize 'lots' must look like 156K" in capsys.readouterr().err
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "board.json").write_text('{"flash_size": 1000}')
    with pytest.raises(UpcertError, match="flash_size 1000 must be a positive multiple of 4096"):
        EmulatedBoard(tmp_path / "y").start(timeout_s=10)
