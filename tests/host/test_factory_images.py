"""Image building pieces without a board: the partition table (esp-idf-defs) against the
emulated board's own layout, the littlefs image read back, merge-bin with a firmware file, the
esptool calls of flash-firmware (which needs a chip to run), and the refusals."""

import hashlib
import json

import pytest
from littlefs import LittleFS
from upcert.board import provision as prov
from upcert.emu import config as emu_config
from upcert.errors import UpcertError
from upcert.factory import flash, image, nvs
from upcert.pki.ca import LocalCa

TABLE = image.BOARDS / "esp32_generic" / "partitions.csv"


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    ca = LocalCa.init(tmp_path_factory.mktemp("ca"), key_type="ec")
    return prov.local_credentials(ca.directory, "img-t")


def _firmware(path, table_bin):
    """A stand-in for MicroPython's firmware.bin: image magic at 0x1000, a partition table at
    0x8000, an app at 0x10000 (offsets in the file are 0x1000 lower)."""
    data = bytearray(b"\xe9" + bytes(0xF000 - 1) + b"\xe9app" + bytes(1000))
    data[0x7000:0x7000 + len(table_bin)] = table_bin
    path.write_bytes(bytes(data))
    return path


def test_partition_table_matches_the_emulators_layout():
    binary, table = image.partition_table(TABLE)
    assert len(binary) == 0xC00 and binary[:2] == b"\xaa\x50"
    cfg = dict(emu_config.DEFAULTS, **emu_config.table_settings(TABLE))
    assert table == emu_config.resolve_partitions(cfg)
    assert image.parse_table(binary) == table


def test_a_bad_partition_table_is_refused(tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text("nvs, data, nvs, 0x9000, 0x6000\nvfs, data, fat, 0xA000, 0x10000\n")
    with pytest.raises(UpcertError, match="partition table .*p.csv: .*overlap"):
        image.partition_table(bad)


def test_build_fs_images_hold_the_device_files(tmp_path, creds):
    cert, key, roots = creds
    cfg = prov.make_config("img-t", "localhost:8883", "fs", wifi=("lab", "pw"))
    m = image.build(tmp_path / "out", cfg, cert, key, roots)
    vfs = next(f for f in m["files"] if f["file"] == "vfs.bin")
    assert vfs["offset"] == 0x200000 and vfs["size"] == 0x1F0000
    data = (tmp_path / "out" / "vfs.bin").read_bytes()
    assert hashlib.sha256(data).hexdigest() == vfs["sha256"]
    fs = LittleFS(block_size=4096, block_count=len(data) // 4096, mount=False)
    fs.context.buffer = bytearray(data)
    fs.mount()
    names = set(fs.listdir("/lib/upcert"))
    assert "agent.mpy" in names and "store_nvs.mpy" in names
    assert json.loads(fs.open("/upcert.d/config.json").read())["thing"] == "img-t"
    with fs.open("/upcert.d/cert.der", "rb") as f:
        assert f.read() == prov.certs.cert_to_der(cert)
    assert {"boot.py", "main.py", "lib", "upcert.d"} <= set(fs.listdir("/"))
    text = json.dumps(m)
    assert prov.certs.key_to_der(key).hex() not in text  # the manifest holds no key


def test_build_nvs_and_partition_stores(tmp_path, creds):
    cert, key, roots = creds
    cert_der, key_der = prov.certs.cert_to_der(cert), prov.certs.key_to_der(key)
    cfg = prov.make_config("img-t", "localhost:8883", "nvs", wifi=("lab", "pw"))
    image.build(tmp_path / "n", cfg, cert, key, roots)
    assert nvs.read((tmp_path / "n" / "nvs.bin").read_bytes()) == {
        "upcert": {"cert": cert_der, "key": key_der}}
    cfg = prov.make_config("img-t", "localhost:8883", "partition", wifi=("lab", "pw"))
    m = image.build(tmp_path / "p", cfg, cert, key, roots)
    part = (tmp_path / "p" / "upcert.bin").read_bytes()
    assert [f["offset"] for f in m["files"] if f["file"] == "upcert.bin"] == [0x3F0000]
    assert len(part) == 0x4000 and part[:4] == b"UPC1" and part[48:64] == b"upcert-committed"
    assert part[64:64 + len(cert_der)] == cert_der and part[0x2000:] == b"\xff" * 0x2000
    assert not (tmp_path / "p" / "nvs.bin").exists()


def test_merge_bin_puts_everything_at_its_offset(tmp_path, creds):
    cert, key, roots = creds
    table_bin, _ = image.partition_table(TABLE)
    stock = bytearray(table_bin)
    stock[40:44] = b"XXXX"  # the firmware's own table differs from the board's
    fw = _firmware(tmp_path / "firmware.bin", bytes(stock))
    cfg = prov.make_config("img-t", "localhost:8883", "nvs", wifi=("lab", "pw"))
    m = image.build(tmp_path / "o", cfg, cert, key, roots, firmware=fw, merge=True)
    merged = (tmp_path / "o" / "merged.bin").read_bytes()
    assert m["merged"]["sha256"] == hashlib.sha256(merged).hexdigest()
    assert merged[0x1000] == 0xE9 and merged[0x10000:0x10004] == b"\xe9app"
    assert merged[0x8000:0x8000 + len(table_bin)] == table_bin  # the board's table, not stock
    for f in m["files"]:
        body = (tmp_path / "o" / f["file"]).read_bytes()
        assert merged[f["offset"]:f["offset"] + f["size"]] == body, f["file"]
    with pytest.raises(UpcertError, match="no partition table at 0x8000"):
        image.build(tmp_path / "o2", cfg, cert, key, roots,
                    firmware=_write(tmp_path / "x.bin", b"\xe9" + bytes(100)), merge=True)
    with pytest.raises(UpcertError, match="--merge needs --firmware"):
        image.build(tmp_path / "o3", cfg, cert, key, roots, merge=True)


def _write(path, data):
    path.write_bytes(data)
    return path


def test_flash_firmware_plan(tmp_path, creds):
    cert, key, roots = creds
    cfg = prov.make_config("img-t", "localhost:8883", "partition", wifi=("lab", "pw"))
    out = tmp_path / "imgs"
    image.build(out, cfg, cert, key, roots)
    fw = _firmware(tmp_path / "firmware.bin", image.partition_table(TABLE)[0])
    calls = flash.plan("/dev/ttyUSB0", fw, out, baud=921600)
    base = ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "921600"]
    regions = ["0x8000", str(out / "partition-table.bin"), "0x200000", str(out / "vfs.bin"),
               "0x3f0000", str(out / "upcert.bin")]
    assert calls == [base + ["erase-flash"],
                     base + ["write-flash", "--flash-size", "4MB", "0x1000", str(fw)],
                     base + ["write-flash", "--flash-size", "4MB"] + regions,
                     base + ["verify-flash"] + regions]
    assert flash.plan("/dev/ttyUSB0", fw, erase=False) == [
        base[:-1] + ["460800", "write-flash", "--flash-size", "4MB", "0x1000", str(fw)]]
    with pytest.raises(UpcertError, match="not found"):
        flash.plan("/dev/ttyUSB0", tmp_path / "none.bin")
    with pytest.raises(UpcertError, match="not an ESP32 firmware image"):
        flash.plan("/dev/ttyUSB0", _write(tmp_path / "fw.uf2", b"UF2\n"))
    (out / "vfs.bin").write_bytes(b"\xff" * 4096)
    with pytest.raises(UpcertError, match="differs from manifest.json"):
        flash.plan("/dev/ttyUSB0", fw, out)
