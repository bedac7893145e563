"""Store "partition" end to end, the way a person does it: `upcert board start --partitions
boards/esp32_generic/partitions.csv`, `upcert provision --store partition`; the board connects,
publishes, and rotates by command into the partition's other record, which survives a power cut.
"""

import json
import os
import re
import signal
import struct
import subprocess
import sys

import pytest

from tests.tools import ROOT, require

CLI = [sys.executable, "-m", "upcert.cli"]
TABLE = ROOT / "boards" / "esp32_generic" / "partitions.csv"
# firmware/upcert/store_part.py: magic, version, seq, cert and key lengths | SHA-256 | mark
RECORD = "<4sB3xIHH"
MARK = b"upcert-committed"


def _cli(*args, ok=True):
    out = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert (out.returncode == 0) == ok, out.stdout + out.stderr
    return out


@pytest.fixture
def state(tmp_path):
    """The state folder of a board started by the CLI; stopped after the test."""
    require("micropython")
    require("mpremote")
    from upcert.emu.board import stop_board

    path = tmp_path / "pboard"
    yield path
    stop_board(path)


def _records(state):
    """{slot: (seq, committed, cert DER)} of the board's upcert partition (two halves)."""
    data = (state / "part-upcert.bin").read_bytes()
    half, out = len(data) // 2, {}
    for slot in (0, 1):
        rec = data[slot * half:(slot + 1) * half]
        magic, _, seq, lc, _ = struct.unpack_from(RECORD, rec)
        if magic == b"UPC1":
            out["ab"[slot]] = (seq, rec[48:64] == MARK, rec[64:64 + lc])
    return out


def _telemetry(cloud, thing, want=None, timeout_s=30):
    from upcert.cloud.standin import Subscription

    with Subscription(cloud, f"things/{thing}/telemetry") as sub:
        msg = sub.wait_for(lambda m: want is None or json.loads(m.payload)["cert_id"] == want,
                           timeout_s=timeout_s)
    return json.loads(msg.payload)


def test_partition_store_provision_connect_rotate(state, cloud, ca, thing):
    from upcert.cloud.registry import Registry
    from upcert.cloud.standin import Subscription
    from upcert.emu.board import EmulatedBoard
    from upcert.pki.certs import cert_id, load_certificate

    port = _cli("board", "start", "--state", state, "--partitions", TABLE).stdout.split()[-1]
    board = EmulatedBoard(state)  # for its log: the CLI started the process
    settings = json.loads((state / "board.json").read_text())
    assert settings["flash_size"] == 0x1F0000 and "upcert" in [
        p["label"] for p in settings["partitions"]]
    out = _cli("provision", "--port", port, "--thing", thing, "--endpoint",
               f"localhost:{cloud.port}", "--store", "partition", "--ca-dir", ca.directory,
               "--cloud-dir", cloud.state_dir, "--wifi-ssid", "lab", "--telemetry-interval", "2")
    assert "(partition store)" in out.stdout
    old = out.stdout.split("certificate id ", 1)[1].split()[0]
    assert board.wait_for_line("upcert: connected", timeout_s=60).count(old[:16]) == 1
    assert _telemetry(cloud, thing)["cert_id"] == old
    [(seq, committed, der)] = _records(state).values()  # provisioning wrote one record
    assert (seq, committed, cert_id(load_certificate(der))) == (1, True, old)

    with Subscription(cloud, f"things/{thing}/replies") as sub:
        sub.client.publish(f"things/{thing}/commands",
                           json.dumps({"cmd": "rotate", "id": "p1"}), qos=1)
        assert json.loads(sub.wait_for(timeout_s=30).payload)["ok"]
    done = board.wait_for_line("upcert: rotation: done", timeout_s=90)
    new = next(r[2] for r in _records(state).values() if r[0] == 2)
    new = cert_id(load_certificate(new))
    assert new != old and new[:16] in done
    assert _telemetry(cloud, thing, want=new)["rotation"] == "done"
    records = _records(state)  # both records intact and committed; the newer one wins
    assert sorted((r[0], r[1]) for r in records.values()) == [(1, True), (2, True)]
    assert Registry(cloud.registry_path).get(new)["status"] == "ACTIVE"

    mark = board.log_size()
    os.kill(int((state / "board.pid").read_text()), signal.SIGUSR1)  # power cut
    assert new[:16] in board.wait_for_line("upcert: connected", timeout_s=60, since=mark)


def test_partition_store_needs_the_table(board_factory, cloud, ca, thing):
    from upcert.board.transport import Board

    board = board_factory()  # MicroPython's stock table: no 'upcert' partition
    out = _cli("provision", "--port", board.port, "--thing", thing, "--endpoint",
               f"localhost:{cloud.port}", "--store", "partition", "--ca-dir", ca.directory,
               "--cloud-dir", cloud.state_dir, "--no-wifi", ok=False)
    assert "no data partition labelled 'upcert'" in out.stderr
    assert "upcert board run --partitions boards/esp32_generic/partitions.csv" in out.stderr
    with Board(board.port) as b:  # refused before anything was written
        assert b.exec("import os; print(sorted(os.listdir('/')))").strip() == "['boot.py']"


def test_table_change_refused_while_state_does_not_fit(tmp_path):
    from upcert.emu import config as emulator_config
    from upcert.errors import UpcertError

    with pytest.raises(UpcertError, match="partition table .*none.csv not found: give an"):
        emulator_config.use_table(tmp_path, tmp_path / "none.csv")
    (tmp_path / "flash.img").write_bytes(b"\xff" * emulator_config.FLASH_SIZE)  # stock vfs
    with pytest.raises(UpcertError, match=r"flash.img has 2097152 bytes, but .* makes vfs "
                       r"2031616 bytes: delete .* and provision the board again"):
        emulator_config.use_table(tmp_path, TABLE)
    (tmp_path / "flash.img").unlink()
    cfg = emulator_config.use_table(tmp_path, TABLE)
    assert cfg == emulator_config.load(tmp_path)  # kept in board.json
    assert cfg["partitions"][-1] == {"label": "upcert", "type": "data", "subtype": "undefined",
                                     "size": 0x4000, "offset": 0x3F0000}


class _PastTheCheck(Exception):
    """provision() asked the board for something after the partition check: it passed."""


@pytest.mark.parametrize("answer, spare, error", [
    ("2 {room}", 0, None),  # one half (1 block) minus the 64-byte record header: fits exactly
    ("2 {room}", -1, "take {size} bytes, but a record of partition 'upcert' holds {less}"),
    ("-", 0, "no data partition labelled 'upcert'"),
    ("no-esp32", 0, "needs an ESP32"),
])
def test_partition_check_before_writing(ca, monkeypatch, answer, spare, error):
    """provision() with store partition asks the board for the partition's size before it
    writes anything (a stand-in Board answers), and refuses credentials a record cannot hold."""
    from upcert.board import provision as prov
    from upcert.board.transport import BoardInfo
    from upcert.errors import UpcertError
    from upcert.pki import certs

    key = certs.generate_key("ec")
    cert = ca.issue_device("part1", key.public_key())
    size = len(certs.cert_to_der(cert)) + len(certs.key_to_der(key))
    block = size + 64 + spare  # two blocks: one per record
    answer = answer.format(room=block)

    class StandIn:  # the board: an ESP32 with the device code's modules, then the probe
        def __init__(self, port, **kw):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def probe(self, modules):
            return BoardInfo("micropython", (1, 24, 1), None, "ESP32", "esp32",
                             {name: [] for name, _ in modules})

        def exec(self, code, **kw):
            if "esp32.Partition.find(esp32.Partition.TYPE_DATA, label='upcert')" not in code:
                raise _PastTheCheck()
            return answer + "\n"

        def __getattr__(self, name):  # anything else comes after the check (or writes)
            raise _PastTheCheck()

    monkeypatch.setattr("upcert.board.provision.Board", StandIn)
    cfg = prov.make_config("part1", "localhost:8883", "partition", wifi=("lab", "pw"))
    if error is None:
        with pytest.raises(_PastTheCheck):
            prov.provision("/dev/stand-in", cfg, cert, key, [ca.certificate], install=False,
                           reset=False, log=lambda m: None)
    else:
        with pytest.raises(UpcertError, match=re.escape(error.format(size=size,
                                                                     less=size - 1))):
            prov.provision("/dev/stand-in", cfg, cert, key, [ca.certificate], install=False,
                           reset=False, log=lambda m: None)
