"""The I2C bridge (upcert.emu.i2c_bridge) between MicroPython's machine.I2C stand-in
(boards/unix/emu/emu_i2c.py) and the ATECC608 emulator: raw frames built by hand in a
MicroPython script (not upcert's driver), then an emulated board with a chip fitted."""

import json
import os
import socket
import subprocess

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from upcert.emu.atecc import Atecc608
from upcert.emu.atecc_zones import new_zones
from upcert.emu.board import EmulatedBoard
from upcert.emu.i2c_bridge import serve

from tests.tools import ROOT, micropython_cmd, require

EMU_DIR = ROOT / "boards" / "unix" / "emu"

# Host-side helpers in MicroPython: CRC-16, wake, poll for a response, send a command.
MP_HELPERS = r'''
import binascii, hashlib, json, time
def crc16(data):
    crc = 0
    for b in data:
        for i in range(8):
            if ((b >> i) & 1) ^ (crc >> 15):
                crc = ((crc << 1) ^ 0x8005) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return bytes((crc & 0xFF, crc >> 8))
def hx(b):
    return binascii.hexlify(b).decode()
def wake(i2c, addr=0x60):
    try:
        i2c.writeto(0, b"\x00")
    except OSError:
        pass
    time.sleep_us(1500)  # tWHI: the chip answers 1500 us after the wake pulse (protocol)
    return i2c.readfrom(addr, 4)
def response(i2c, addr):
    for _ in range(300):
        try:
            i2c.writeto(addr, b"\x00")
            n = i2c.readfrom(addr, 1)
            return n + i2c.readfrom(addr, n[0] - 1)
        except OSError:  # NACK while it executes: polled, for at most about 300 ms
            time.sleep_ms(1)
    raise OSError("no response")
def cmd(i2c, op, p1=0, p2=0, data=b"", addr=0x60):
    body = bytes((7 + len(data), op, p1, p2 & 0xFF, p2 >> 8)) + data
    i2c.writeto(addr, b"\x03" + body + crc16(body))
    r = response(i2c, addr)
    if crc16(r[:-2]) != r[-2:]:
        raise ValueError("bad CRC " + hx(r))
    if r[0] == 4 and r[1] == 0xEE:
        i2c.writeto(addr, b"\x02")
        wake(i2c, addr)
        return cmd(i2c, op, p1, p2, data, addr)
    return r[1] if r[0] == 4 else r[1:-2]
'''

SESSION = MP_HELPERS + r'''
import sys, emu_i2c
emu_i2c.connect(sys.argv[1])
i2c = emu_i2c.I2C(0, freq=400000)
out = {}
try:
    i2c.writeto(0, b"\x00")
except OSError as e:
    out["wake_ack"] = e.args[0]
time.sleep_us(1500)  # tWHI after the pulse, as wake() does: protocol timing, not a wait
out["scan_400k"] = i2c.scan()
i2c.init(freq=100000)
out["wake"] = hx(wake(i2c))
out["scan_awake"] = i2c.scan()
out["info"] = hx(cmd(i2c, 0x30))
cfg = bytearray(cmd(i2c, 0x02, 0x80, 0) + cmd(i2c, 0x02, 0x80, 8) + cmd(i2c, 0x02, 0x80, 16)
                + cmd(i2c, 0x02, 0x80, 24))
out["config"] = hx(cfg)
for n in range(16):
    sc, kc = (b"\x87\x20", b"\x33\x00") if n in (0, 2, 3, 4) else (b"\x00\x00", b"\x3c\x00")
    cfg[20 + 2 * n:22 + 2 * n], cfg[96 + 2 * n:98 + 2 * n] = sc, kc
st = []
for w in (4, 5, 6, 7, 16, 17, 18, 19, 20, 22, 23):
    st.append(cmd(i2c, 0x12, 0x00, w, bytes(cfg[w * 4:w * 4 + 4])))
st.append(cmd(i2c, 0x12, 0x80, 8, bytes(cfg[32:64])))
st.append(cmd(i2c, 0x12, 0x80, 24, bytes(cfg[96:128])))
c = crc16(cfg)
st.append(cmd(i2c, 0x17, 0x00, c[0] | c[1] << 8))
out["statuses"] = st
out["pub"] = hx(cmd(i2c, 0x40, 0x04, 0))
digest = hashlib.sha256(b"over the bridge").digest()
out["digest"] = hx(digest)
out["nonce"] = cmd(i2c, 0x16, 0x03, 0, digest)
out["sig"] = hx(cmd(i2c, 0x41, 0x80, 0))
out["fault"] = emu_i2c.control(0x60, {"fault": "crc", "count": 1})
try:
    cmd(i2c, 0x30)
except ValueError as e:
    out["crc_fault"] = str(e)[:7]
emu_i2c.control(0x60, {"fault": "nack", "count": 1})
try:
    i2c.writeto(0x60, b"\x00")
except OSError as e:
    out["nack"] = e.args[0]
try:
    i2c.readfrom(0x61, 1)
except OSError as e:
    out["absent"] = e.args[0]
out["missing"] = emu_i2c.control(0x61, {"query": "state"})["error"]
i2c.writeto(0x60, b"\x01")
out["scan_asleep"] = i2c.scan()
print(json.dumps(out))
'''


def run_mp(script, *args, timeout=60):
    env = dict(os.environ, MICROPYPATH=str(EMU_DIR))
    proc = subprocess.run(micropython_cmd() + ["-c", script, *args], capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def check_sig(pub_hex, digest_hex, sig_hex):
    pub, sig = bytes.fromhex(pub_hex), bytes.fromhex(sig_hex)
    key = ec.EllipticCurvePublicNumbers(int.from_bytes(pub[:32], "big"),
                                        int.from_bytes(pub[32:], "big"),
                                        ec.SECP256R1()).public_key()
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    key.verify(der, bytes.fromhex(digest_hex), ec.ECDSA(Prehashed(hashes.SHA256())))


def test_micropython_session_over_the_bridge(tmp_path):
    chip = Atecc608(new_zones("blank", seed="bridge"))
    with serve(tmp_path / "i2c.sock", [chip]) as bridge:
        assert (os.stat(bridge.path).st_mode & 0o777) == 0o600
        out = json.loads(run_mp(SESSION, bridge.path).strip().splitlines()[-1])
    assert not os.path.exists(tmp_path / "i2c.sock")
    assert out["wake_ack"] == 19  # nobody acknowledges the wake pulse (ENODEV, as an ESP32)
    assert out["scan_400k"] == []  # 20 us low at 400 kHz does not wake the chip
    assert out["wake"] == "04113343" and out["scan_awake"] == [0x60]
    assert out["info"] == "00006002"
    cfg = bytes.fromhex(out["config"])
    assert cfg[0:2] == b"\x01\x23" and cfg[12] == 0xEE and cfg[87] == 0x55
    assert out["statuses"] == [0] * 14, out["statuses"]
    assert out["nonce"] == 0
    check_sig(out["pub"], out["digest"], out["sig"])
    assert out["fault"] == {"ok": True} and out["crc_fault"] == "bad CRC"
    assert out["nack"] == 19 and out["absent"] == 19 and out["missing"] == "no device at 0x61"
    assert out["scan_asleep"] == []
    assert chip.describe()["config_locked"] and chip.describe()["key_slots"] == [0]


def test_bus_timeouts_and_missing_bridge(tmp_path):
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # accepts, never answers
    dead.bind(str(tmp_path / "dead.sock"))
    dead.listen(1)
    script = r'''
import errno, sys, emu_i2c
i2c = emu_i2c.I2C(0, freq=100000)
for path, t in ((sys.argv[1], 0.3), (sys.argv[2], 2)):
    emu_i2c.connect(path, timeout_s=t)
    try:
        i2c.readfrom(0x60, 4)
    except OSError as e:
        print(e.args[0] == errno.ETIMEDOUT, e.args[0] == errno.ENODEV)
'''
    try:
        out = run_mp(script, str(tmp_path / "dead.sock"), str(tmp_path / "none.sock"))
    finally:
        dead.close()
    assert out.split() == ["True", "False", "False", "True"]


def test_bridge_requests_directly(tmp_path):
    chip = Atecc608(new_zones("tng", seed="d"))
    with serve(tmp_path / "i2c.sock", [chip]) as bridge:
        assert bridge.handle(0x57, 0, 400000, 1, b"\x00") == b"\x01"  # too short a pulse
        assert bridge.handle(0x52, 0x35, 100000, 4, b"") == b"\x01"  # still asleep
        assert bridge.handle(0x57, 0, 100000, 1, b"\x00") == b"\x01"  # wake: NACKed
        reply = bridge.handle(0x43, 0x35, 0, 0, b'{"query": "state"}')
        assert reply[0] == 0 and json.loads(reply[3:])["state"] == "awake"
        assert b"not JSON" in bridge.handle(0x43, 0x35, 0, 0, b"{")
        with pytest.raises(ValueError):
            bridge.handle(0x58, 0x35, 0, 0, b"")


def test_emulated_board_with_a_chip(tmp_path):
    require("mpremote")
    word = "import machine\ni2c = machine.I2C(0, freq=100000)\nprint(hx(wake(i2c)))\n"
    first = MP_HELPERS + word + r'''
print(cmd(i2c, 0x12, 0x00, 5, b"\x87\x20\x87\x20"))
print(cmd(i2c, 0x16, 0x03, 0, bytes(32)))
print(cmd(i2c, 0x30, 0x02)[1] >> 7)
i2c.writeto(0x60, b"\x02")
'''
    later = MP_HELPERS + word + r'''
print(cmd(i2c, 0x30, 0x02)[1] >> 7)
print(hx(cmd(i2c, 0x02, 0x00, 5)))
i2c.writeto(0x60, b"\x02")
'''
    with EmulatedBoard(tmp_path / "b", atecc608="blank") as board:
        assert (board.state_dir / "i2c.sock").exists()
        state = board.state_dir / "atecc608.json"
        assert (state.stat().st_mode & 0o777) == 0o600

        def mpr(code):
            proc = subprocess.run([require("mpremote"), "connect", board.port, "exec", code],
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stdout + proc.stderr + board.log_text()[-1500:]
            return proc.stdout.split()

        assert mpr(first) == ["04113343", "0", "0", "1"]
        # mpremote's soft reset restarts the interpreter, not the chip: idle kept TempKey
        assert mpr(later) == ["04113343", "1", "87208720"]
        mark = board.log_size()
        board.power_cut()  # the chip loses power with the board: TempKey gone, EEPROM kept
        board.wait_for_log("rst:0x1", since=mark)
        assert mpr(later) == ["04113343", "0", "87208720"]
        assert json.loads(state.read_text())["config"][40:48] == "87208720"
    assert not (board.state_dir / "i2c.sock").exists()
    cfg = json.loads((board.state_dir / "board.json").read_text())
    assert cfg["atecc608"] == {"layout": "blank", "address": 0x60}


def test_board_json_chip_setting_is_checked(tmp_path):
    from upcert.emu.config import load
    from upcert.errors import UpcertError

    assert load(tmp_path / "c", atecc608="tng")["atecc608"] == {"layout": "tng",
                                                                 "address": 0x35}
    assert load(tmp_path / "c", atecc608="none")["atecc608"] is None
    (tmp_path / "c" / "board.json").write_text(json.dumps({"atecc608": {"layout": "x"}}))
    with pytest.raises(UpcertError, match="atecc608"):
        load(tmp_path / "c")
    (tmp_path / "c" / "board.json").write_text(
        json.dumps({"atecc608": {"layout": "blank", "address": 300}}))
    with pytest.raises(UpcertError, match="7-bit"):
        load(tmp_path / "c")


def test_script_crc_matches_the_data_sheet():
    out = run_mp(MP_HELPERS + "print(hx(crc16(b'\\x04\\x11')), hx(crc16(b'\\x04\\x00')))")
    assert out.split() == ["3343", "0340"]


def test_bridge_holds_the_reply_of_the_command_that_cut_the_power(tmp_path):
    # Once the chip's armed cut is due the bridge answers nothing: the board's interpreter waits
    # until its host process has killed it, so nothing it would do after that command happens.
    import struct
    import time

    from upcert.emu.atecc_zones import crc16
    from upcert.emu.i2c_bridge import control

    chip = Atecc608(new_zones("tng", seed="hold"))
    cut = []
    chip.on_cut = lambda: cut.append(True)
    path = tmp_path / "i2c.sock"
    with serve(path, [chip]):
        assert control(path, 0x35, {"cut_after_commands": 1}) == {"ok": True}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(struct.pack("<BBBIH", 0x57, 0, 1, 100000, 1) + b"\x00")  # wake
            assert s.recv(1) == b"\x01"  # nobody ACKs the wake pulse
            time.sleep(0.002)  # tWHI
            body = bytes((7, 0x30, 0, 0, 0))  # Info
            pkt = b"\x03" + body + crc16(body)
            s.sendall(struct.pack("<BBBIH", 0x57, 0x35, 1, 100000, len(pkt)) + pkt)
            s.settimeout(0.5)
            with pytest.raises(socket.timeout):
                s.recv(1)
        assert cut == [True]
        got = control(path, 0x35, {"query": "commands"})
        assert got["count"] == 1 and got["trace"][0]["cmd"] == "Info"
        chip.power_cycle()
        assert not chip.cut_pending
