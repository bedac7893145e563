"""`upcert image build`: one board's flash as files, each in the format its reader expects, so a
station writes a board in one pass (esptool) instead of a REPL session.

- partition-table.bin: ESP-IDF's binary table (0xAA50 entries + MD5 row) made from the board's
  CSV by esp-idf-defs (PyPI; ESP-IDF's gen_esp32part CSV rules and binary format, packaged);
- vfs.bin: a littlefs v2 image of the `vfs` partition (block size 4096, as MicroPython's ESP32
  port mounts it) with the device package as provision installs it (.mpy), boot.py, main.py,
  /lib/board.mpy, /upcert.d/config.json, /upcert.d/roots.der and, for store fs, the credentials;
- nvs.bin (store nvs): the `nvs` partition made by Espressif's esp-idf-nvs-partition-gen,
  namespace `upcert`, blobs `cert` and `key` (firmware/upcert/store_nvs.py's slot A);
- upcert.bin (store partition): the `upcert` data partition with one committed record in slot A
  (firmware/upcert/store_part.py's format);
- manifest.json: chip, flash size, every file's offset, size and SHA-256, the certificate's id
  and expiry (never a key byte);
- with merge: merged.bin, one image from 0x0 (esptool merge_bin) with the user's MicroPython
  firmware, its partition table replaced by this one.

The private key travels inside vfs.bin / nvs.bin / upcert.bin: that is inherent to pre-built
images (a key made on the board never leaves it; see `upcert provision --claim`). The folder is
0700 and its files 0600.
"""

import datetime
import hashlib
import json
import struct
from pathlib import Path

from upcert.errors import UpcertError
from upcert.paths import BOARDS
from upcert.validate import private_dir, write_private

MANIFEST = "manifest.json"
TABLE_OFFSET = 0x8000
BLOCK = 4096
STORES = ("fs", "nvs", "partition")
# Defaults of a board without boards/<board>/image.json.
BOARD_DEFAULTS = {"chip": "esp32", "flash_size": "4MB", "partitions": "partitions.csv",
                  "firmware_offset": 0x1000}


def board_settings(board):
    """A board definition's image settings: chip, flash_size, partitions (CSV path),
    firmware_offset (where MicroPython's firmware.bin goes: 0x1000 on the ESP32)."""
    folder = BOARDS / board
    if not (folder / "board.py").exists():
        known = sorted(p.parent.name for p in BOARDS.glob("*/board.py"))
        raise UpcertError(f"unknown board {board!r}: known boards are {', '.join(known)}")
    cfg = dict(BOARD_DEFAULTS)
    path = folder / "image.json"
    if path.exists():
        try:
            cfg.update(json.loads(path.read_text()))
        except ValueError as e:
            raise UpcertError(f"{path} is not valid JSON ({e})") from None
    cfg["partitions"] = folder / cfg["partitions"]
    if not cfg["partitions"].exists():
        raise UpcertError(f"board {board}: no partition table {cfg['partitions']}")
    return cfg


def partition_table(csv_path):
    """(binary, [{"label", "type", "subtype", "offset", "size"}]) of an ESP-IDF partition CSV,
    made and checked by esp-idf-defs (overlaps, alignment, sizes)."""
    from esp_idf_defs.partitions import InputError, PartitionTable, ValidationError

    try:
        table = PartitionTable.from_csv(Path(csv_path).read_text())
        table.verify()
        binary = table.to_binary()
    except (InputError, ValidationError) as e:
        raise UpcertError(f"partition table {csv_path}: {e}") from None
    return binary, parse_table(binary)


def parse_table(binary):
    """The entries of a binary partition table (esp-idf-defs checks its MD5 row)."""
    from esp_idf_defs.partitions import InputError, PartitionTable

    try:
        table = PartitionTable.from_binary(binary)
    except InputError as e:
        raise UpcertError(f"not an ESP-IDF partition table: {e}") from None
    return [{"label": p.name, "type": p.type, "subtype": p.subtype, "offset": p.offset,
             "size": p.size} for p in table]


def littlefs_image(size, files):
    """A littlefs v2 image of `size` bytes holding files [(path, bytes)], in MicroPython's
    settings for the ESP32 vfs partition (block 4096; read, prog and lookahead 32; name_max 255,
    extmod/vfs_lfsx.c): what its VfsLfs2 mounts."""
    from littlefs import LittleFS

    if size % BLOCK:
        raise UpcertError(f"the vfs partition ({size} bytes) is not a multiple of {BLOCK}")
    fs = LittleFS(block_size=BLOCK, block_count=size // BLOCK, read_size=32, prog_size=32,
                  lookahead_size=32, name_max=255)
    for path, data in files:
        parent = path.rsplit("/", 1)[0]
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(data)
    image = bytes(fs.context.buffer)
    if len(image) != size:
        raise UpcertError(f"littlefs made {len(image)} bytes, not {size}")
    return image


# firmware/upcert/store_part.py: magic, version, seq, cert length, key length | SHA-256 of those
# 16 bytes + cert + key | commit mark | cert | key; slot A is the partition's first half.
_PART_HDR = "<4sB3xIHH"
_PART_MARK = b"upcert-committed"


def partition_record(size, cert_der, key_der):
    """The `upcert` data partition (`size` bytes) with slot A holding a committed record, seq 1,
    the rest erased, as PartitionStore.write() leaves an empty partition."""
    hdr = struct.pack(_PART_HDR, b"UPC1", 1, 1, len(cert_der), len(key_der))
    digest = hashlib.sha256(hdr + cert_der + key_der).digest()
    record = hdr + digest + _PART_MARK + cert_der + key_der
    if len(record) > size // 2 // BLOCK * BLOCK:
        raise UpcertError(f"certificate and key take {len(record) - 64} bytes: a slot of the "
                          f"{size}-byte upcert partition holds {size // 2 // BLOCK * BLOCK - 64}")
    return record + b"\xff" * (size - len(record))


def device_files(board, cfg, roots_der, cert_der, key_der):
    """[(path, bytes)] for the board's filesystem: what `upcert provision` would leave there."""
    from upcert.board import firmware
    from upcert.board.provision import CONFIG_PATH, ROOTS_PATH

    files = firmware.files(board, mpy=True)
    files += [(CONFIG_PATH, json.dumps(cfg, separators=(",", ":")).encode()),
              (ROOTS_PATH, roots_der)]
    if cfg["store"]["kind"] == "fs":  # store_fs.py slot A: the single-slot layout
        files += [("/upcert.d/cert.der", cert_der), ("/upcert.d/key.der", key_der)]
    return files


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def build(out_dir, cfg, cert, key, roots, *, board="esp32_generic", firmware=None, merge=False):
    """Write the images for one board into out_dir (made 0700; files 0600). cfg: the device's
    config (provision.make_config). Returns the manifest (dict)."""
    from upcert.pki import certs

    store = cfg["store"]["kind"]
    if store not in STORES:
        raise UpcertError(f"store {store!r}: images are made for {', '.join(STORES)}")
    if merge and not firmware:
        raise UpcertError("--merge needs --firmware FILE.bin (MicroPython's firmware for the "
                          "board, from micropython.org/download)")
    settings = board_settings(board)
    table_bin, table = partition_table(settings["partitions"])
    parts = {p["label"]: p for p in table}
    for label in ("vfs", "nvs") + (("upcert",) if store == "partition" else ()):
        if label not in parts:
            raise UpcertError(f"{settings['partitions']} has no '{label}' partition, which "
                              f"store {store} needs")
    report = certs.check_device_credentials(cert, key, roots[0] if len(roots) == 1 else None)
    cert_der, key_der = certs.cert_to_der(cert), certs.key_to_der(key)
    roots_der = b"".join(certs.cert_to_der(r) for r in roots)
    images = [("partition-table.bin", None, TABLE_OFFSET, table_bin)]
    vfs = parts["vfs"]
    images.append(("vfs.bin", "vfs", vfs["offset"], littlefs_image(
        vfs["size"], device_files(board, cfg, roots_der, cert_der, key_der))))
    if store == "nvs":
        from upcert.factory import nvs

        ns = cfg["store"].get("namespace", "upcert")
        images.append(("nvs.bin", "nvs", parts["nvs"]["offset"], nvs.build(
            ns, [("cert", cert_der), ("key", key_der)], parts["nvs"]["size"])))
    if store == "partition":
        label = cfg["store"].get("label", "upcert")
        images.append(("upcert.bin", label, parts[label]["offset"],
                       partition_record(parts[label]["size"], cert_der, key_der)))
    out = Path(out_dir)
    private_dir(out)
    for name in ("nvs.bin", "upcert.bin", "merged.bin"):  # a rebuild leaves no stale image
        if (out / name).exists():
            (out / name).unlink()
    manifest = {
        "format": 1, "thing": cfg["thing"], "store": store, "board": board,
        "chip": settings["chip"], "flash_size": settings["flash_size"],
        "cert_id": report.cert_id, "not_after": report.not_after.isoformat(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "partitions": table,
        "files": [],
        "note": "the private key is inside the images: keep this folder as you keep keys",
    }
    for name, label, offset, data in images:
        write_private(out / name, data)
        manifest["files"].append({"file": name, "partition": label, "offset": offset,
                                  "size": len(data), "sha256": _sha(data)})
    if merge:
        manifest["merged"] = merge_images(out, manifest, firmware, settings)
    write_private(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(folder):
    """The manifest of an image folder, with each file checked against its SHA-256."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise UpcertError(f"{folder} holds no {MANIFEST}: build it with `upcert image build`")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise UpcertError(f"{path} is not an image manifest ({e}): build it again") from None
    for f in files:
        p = folder / f["file"]
        if not p.exists() or _sha(p.read_bytes()) != f["sha256"]:
            raise UpcertError(f"{p} is missing or differs from {MANIFEST} (sha256): build the "
                              "images again")
    return manifest


def _patched_firmware(firmware, table_bin, fw_offset):
    """MicroPython's ESP32 firmware.bin (bootloader, table, app from fw_offset) with its
    partition table replaced by ours, so the merged image boots with this board's table."""
    data = bytearray(Path(firmware).read_bytes())
    at = TABLE_OFFSET - fw_offset
    if len(data) < at + len(table_bin) or data[at:at + 2] != b"\xaa\x50":
        raise UpcertError(f"{firmware} has no partition table at {TABLE_OFFSET:#x}: give "
                          "MicroPython's firmware.bin for the board (it starts with the "
                          f"bootloader at {fw_offset:#x})")
    data[at:at + len(table_bin)] = table_bin
    return bytes(data)


def merge_images(out, manifest, firmware, settings):
    """merged.bin from 0x0 (esptool merge-bin): MicroPython's bootloader (firmware.bin up to the
    table), this board's table and partitions, and the app (firmware.bin from the first app
    partition's offset on); what firmware.bin holds between them is its own (replaced) table
    and erased padding over nvs and phy_init."""
    import esptool

    table = next(f for f in manifest["files"] if f["file"] == "partition-table.bin")
    off = settings["firmware_offset"]
    fw = _patched_firmware(firmware, (out / table["file"]).read_bytes(), off)
    apps = [p["offset"] for p in manifest["partitions"] if p["type"] == 0]
    if not apps or len(fw) <= apps[0] - off:
        raise UpcertError(f"{firmware} ends before the app partition at "
                          f"{apps[0] if apps else 0:#x}: give MicroPython's whole firmware.bin")
    pieces = [(off, "boot.part", fw[:TABLE_OFFSET - off]),
              (apps[0], "app.part", fw[apps[0] - off:])]
    args = ["--chip", settings["chip"], "merge-bin", "--output", str(out / "merged.bin"),
            "--flash-size", settings["flash_size"]]
    for where, name, data in pieces:
        write_private(out / name, data)
        args += [f"{where:#x}", str(out / name)]
    for f in manifest["files"]:
        args += [f"{f['offset']:#x}", str(out / f["file"])]
    import contextlib
    import sys

    try:
        with contextlib.redirect_stdout(sys.stderr):  # esptool's progress: not the result
            esptool.main(args)
    except (esptool.FatalError, SystemExit) as e:
        raise UpcertError(f"esptool merge-bin failed: {e}") from None
    finally:
        for _, name, _ in pieces:
            (out / name).unlink()
    (out / "merged.bin").chmod(0o600)
    data = (out / "merged.bin").read_bytes()
    return {"file": "merged.bin", "offset": 0, "size": len(data), "sha256": _sha(data),
            "firmware": str(firmware), "firmware_sha256": _sha(Path(firmware).read_bytes())}
