"""The emulated board's esp32.NVS (boards/unix/emu/emu_nvs.py, run by the MicroPython unix port)
and ESP-IDF's NVS partition format, checked with Espressif's own generator (PyPI
esp-idf-nvs-partition-gen):

- an image the generator made is read by the board: every namespace, blob (split over pages
  too), i32, and the foreign types it does not offer (u8, string) read as not found;
- what the board writes on an erased partition is byte for byte what the generator makes for
  the same items, so ESP-IDF reads it;
- after rotations, garbage collection and a power cut in the middle of a commit, the partition
  the board left is still read by the host's decoder (upcert.factory.nvs.read, written from
  ESP-IDF's documentation and checked against the generator here) as the board reads it.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
from upcert.factory import nvs

from tests.tools import require

ROOT = Path(__file__).resolve().parents[2]
SIZE = 0x6000

# Runs on the unix port: load the partition in argv[1], apply the ops, print what it holds.
SCRIPT = r"""
import sys, json, binascii
sys.path.insert(0, "boards/unix/emu")
import emu_nvs, emu_cut
from emu_flash import open_image
path, size = sys.argv[1], int(sys.argv[3])
with open(sys.argv[2]) as g:
    ops = json.load(g)
f = open_image(path, size)
emu_nvs.install(emu_nvs.NvsStore(f, size).load())
class Cut(Exception):
    pass
left = [0]
def wrote():
    left[0] -= 1
    if left[0] == 0:
        raise Cut()
out = {}
try:
    for op in ops:
        if op[0] == "cut_after":
            left[0] = op[1]
            emu_cut.wrote = wrote
            continue
        n = emu_nvs.NVS(op[1])
        if op[0] == "blob":
            n.set_blob(op[2], binascii.unhexlify(op[3]))
        elif op[0] == "i32":
            n.set_i32(op[2], op[3])
        elif op[0] == "erase":
            n.erase_key(op[2])
        elif op[0] == "commit":
            n.commit()
        elif op[0] == "get":
            buf = bytearray(8192)
            try:
                out[op[1] + "/" + op[2]] = binascii.hexlify(buf[:n.get_blob(op[2], buf)]).decode()
            except OSError as e:
                try:
                    out[op[1] + "/" + op[2]] = n.get_i32(op[2])
                except OSError as e2:
                    out[op[1] + "/" + op[2]] = e2.args[0]
except Cut:
    out["cut"] = True
f.close()
print(json.dumps(out))
"""


def board(path, ops, size=SIZE):
    """Run ops on the board's NVS over the partition file `path`; what the gets saw."""
    mp = require("micropython")
    script = path.parent / "nvs_ops.py"
    script.write_text(SCRIPT)
    (path.parent / "ops.json").write_text(json.dumps(ops))
    proc = subprocess.run([mp, str(script), str(path), str(path.parent / "ops.json"), str(size)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, MICROPYPATH=str(ROOT / "boards/unix/emu")))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout.strip().splitlines()[-1])


CERT = bytes(range(256)) * 3 + b"cert-end"  # 776 bytes
KEY = b"\x30\x81\x87" + bytes(135)
BIG = bytes((i * 7) & 0xFF for i in range(3000))  # needs a second page once the first fills


def test_the_board_reads_the_generators_image(tmp_path):
    import io

    from esp_idf_nvs_partition_gen import nvs_partition_gen as gen

    out = io.BytesIO()
    h = gen.nvs_open(out, SIZE - 4096, gen.Page.VERSION2)  # as its CLI: a page kept back
    gen.write_entry(h, "other", "namespace", "", "")
    gen.write_entry(h, "n8", "data", "u8", "7")
    gen.write_entry(h, "s", "data", "string", "hello")
    gen.write_entry(h, "upcert", "namespace", "", "")
    for key, value in (("cert", CERT), ("key", KEY), ("big", BIG), ("big2", BIG)):
        gen.write_entry(h, key, "data", "binary", value)
    gen.write_entry(h, "v", "data", "i32", "-12345")
    gen.nvs_close(h)
    image = out.getvalue()
    assert len(image) == SIZE
    pages = nvs.summary(image)
    assert [p["state"] for p in pages][:3] == ["full", "active", "empty"], pages  # split blobs
    path = tmp_path / "nvs.bin"
    path.write_bytes(image)
    got = board(path, [["get", "upcert", k] for k in ("cert", "key", "big", "big2", "v", "nope")]
                + [["get", "other", "n8"], ["get", "other", "s"]])
    assert got == {"upcert/cert": CERT.hex(), "upcert/key": KEY.hex(), "upcert/big": BIG.hex(),
                   "upcert/big2": BIG.hex(), "upcert/v": -12345, "upcert/nope": -4354,
                   "other/n8": -4354, "other/s": -4354}
    # the host's decoder agrees with the generator, foreign types included
    assert nvs.read(image) == {"other": {"n8": 7, "s": "hello"},
                               "upcert": {"cert": CERT, "key": KEY, "big": BIG, "big2": BIG,
                                          "v": -12345}}
    # and the board leaves that image untouched when it only reads it
    assert path.read_bytes() == image


def test_what_the_board_writes_is_the_generators_bytes(tmp_path):
    items = [("cert", CERT), ("key", KEY), ("v", 42), ("big", BIG)]
    path = tmp_path / "nvs.bin"
    ops = [["blob" if isinstance(v, bytes) else "i32", "upcert", k, v.hex()
            if isinstance(v, bytes) else v] for k, v in items] + [["commit", "upcert"]]
    board(path, ops)
    written = path.read_bytes()
    assert written == nvs.build("upcert", items, SIZE)
    assert nvs.read(written) == {"upcert": dict(items)}


def test_after_rotations_gc_and_a_cut_the_host_reads_what_the_board_reads(tmp_path):
    path = tmp_path / "nvs.bin"
    path.write_bytes(nvs.build("upcert", [("cert", CERT), ("key", KEY)], SIZE))
    ops = []
    for i in range(30):  # each rewrite leaves erased entries: garbage collection runs
        ops += [["blob", "upcert", "cert", (bytes([i]) * 900).hex()],
                ["blob", "upcert", "key", (bytes([i]) * 140).hex()],
                ["i32", "upcert", "n", i], ["commit", "upcert"]]
    ops += [["erase", "upcert", "n"], ["commit", "upcert"]]
    ops += [["cut_after", 5], ["blob", "upcert", "cert", (b"z" * 1000).hex()],
            ["blob", "upcert", "key", (b"y" * 150).hex()], ["commit", "upcert"]]
    got = board(path, ops)
    assert got == {"cut": True}
    image = path.read_bytes()
    pages = nvs.summary(image)
    assert max(p["seq"] or 0 for p in pages) > len(pages), "no page was ever collected"
    on_board = board(path, [["get", "upcert", k] for k in ("cert", "key", "n")])
    host = nvs.read(path.read_bytes())["upcert"]
    assert on_board["upcert/n"] == -4354 and "n" not in host
    for k in ("cert", "key"):
        assert bytes.fromhex(on_board[f"upcert/{k}"]) == host[k]
    assert host["cert"] in (bytes([29]) * 900, b"z" * 1000)
    assert host["key"] in (bytes([29]) * 140, b"y" * 150)


def test_a_partition_that_is_not_nvs_is_refused_by_the_decoder():
    with pytest.raises(Exception, match="multiple of 4096"):
        nvs.read(b"\xff" * 5000)
