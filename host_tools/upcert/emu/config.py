"""Settings of one emulated board: <state>/board.json, its defaults and its checks.

The host resolves board.json (partition offsets included) and hands the result to the board
as JSON in UPCERT_BOARD, so the MicroPython side never has to validate it.
"""

import json
import os
import re
import struct
import time
from pathlib import Path

from upcert.emu.atecc_zones import DEFAULT_ADDRESS, LAYOUTS
from upcert.errors import UpcertError
from upcert.validate import open_private, private_dir, write_private

SECTOR = 4096
FLASH_SIZE = 0x200000  # the vfs partition of MicroPython's partitions-4MiB.csv
NVS_SIZE = 0x6000  # the nvs partition of every stock table (24 KiB)
# MicroPython ports/esp32/partitions-4MiB.csv: Name, Type, SubType, Offset, Size.
DEFAULT_PARTITIONS = [
    {"label": "nvs", "type": "data", "subtype": "nvs", "size": NVS_SIZE},
    {"label": "phy_init", "type": "data", "subtype": "phy", "size": 0x1000},
    {"label": "factory", "type": "app", "subtype": "factory", "size": 0x1F0000},
    {"label": "vfs", "type": "data", "subtype": "fat", "size": FLASH_SIZE},
]
# A board whose key is in an ATECC608 connects with upcert's own TLS client (tls12.py): no mbedTLS
# session in the IDF heap (31-32 KB at a handshake's peak on a 32-bit build, measured), which the
# ESP32's Python heap can grow into instead: 112 KB + 32 KB of 32-bit objects, / 0.716 = 200K.
# Fitting a chip to a board at the plain default gives it this one (boards/unix/README.md,
# "Memory").
OWN_TLS_HEAPSIZE = "200K"
DEFAULTS = {
    # The 64-bit heap that matches an ESP32's after growing once: 56 KB doubled = 112 KB of
    # 32-bit objects (ports/esp32/mpconfigport.h), divided by the measured 32/64-bit ratio of
    # what a whole cycle with a rotation needs, 73K / 102K = 0.716 (bench/bench_rotation_heap.py
    # with both binaries): 156K. Derivation and limits: boards/unix/README.md, "Memory".
    "heapsize": "156K",
    "flash_size": FLASH_SIZE,
    "nvs_size": NVS_SIZE,
    "clock": "set",
    "ntp": "ok",
    "partitions": DEFAULT_PARTITIONS,
    # Cut the power right after the Nth persistent write from the start (0: never); see
    # EmulatedBoard.arm_power_cut to arm it while the board runs.
    "power_cut_after_writes": 0,
    # An emulated ATECC608 on I2C: null (none), or {"layout": "blank"|"tng", "address": 96}.
    "atecc608": None,
}
TYPES = {"app": 0, "data": 1}
# ESP-IDF esp_partition.h subtype values.
SUBTYPES = {
    "app": {"factory": 0x00, "test": 0x20, **{f"ota_{i}": 0x10 + i for i in range(16)}},
    "data": {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04,
             "efuse": 0x05, "undefined": 0x06, "esphttpd": 0x80, "fat": 0x81, "spiffs": 0x82,
             "littlefs": 0x83},
}
_HEAP_RE = re.compile(r"^[1-9][0-9]*[KM]?$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
FIRST_OFFSET = 0x9000  # after the bootloader and the partition table at 0x8000


def load(state_dir, *, heapsize=None, clock=None, ntp=None, atecc608=None):
    """Read <state>/board.json (creating the folder and defaults on first use), apply the
    explicit arguments, check everything and write it back. Returns the settings dict.
    `atecc608` is "blank", "tng" (fit that chip at its default address) or "none".
    A folder made here is 0700, board.json 0600 (the state holds the board's key)."""
    state = Path(state_dir)
    private_dir(state)
    path = state / "board.json"
    cfg = json.loads(json.dumps(DEFAULTS))
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError as e:
            raise UpcertError(f"{path} is not valid JSON ({e}); fix it or delete it") from e
        if not isinstance(stored, dict):
            raise UpcertError(f"{path} must hold a JSON object; fix it or delete it")
        unknown = sorted(set(stored) - set(DEFAULTS))
        if unknown:
            raise UpcertError(f"{path}: unknown setting(s) {', '.join(unknown)}; "
                              f"known: {', '.join(DEFAULTS)}")
        cfg.update(stored)
    for key, value in (("heapsize", heapsize), ("clock", clock), ("ntp", ntp)):
        if value is not None:
            cfg[key] = value
    if atecc608 is not None:
        cfg["atecc608"] = chip_setting(atecc608, cfg["atecc608"])
        if heapsize is None and cfg["atecc608"] and cfg["heapsize"] == DEFAULTS["heapsize"]:
            cfg["heapsize"] = OWN_TLS_HEAPSIZE
    check(cfg, path)
    _save(path, cfg)
    return cfg


def _save(path, cfg):
    """board.json, replaced at once, 0600."""
    tmp = path.with_suffix(".json.tmp")
    write_private(tmp, json.dumps(cfg, indent=2) + "\n")
    os.replace(tmp, path)


def check(cfg, where="board.json"):
    """Raise UpcertError naming the first bad setting and how to fix it."""
    if not isinstance(cfg["heapsize"], str) or not _HEAP_RE.match(cfg["heapsize"]):
        raise UpcertError(f"{where}: heapsize {cfg['heapsize']!r} must look like 156K, 2M "
                          "or 65536 (bytes)")
    if cfg["clock"] not in ("set", "unset"):
        raise UpcertError(f"{where}: clock must be \"set\" or \"unset\", not {cfg['clock']!r}")
    if cfg["ntp"] not in ("ok", "unreachable"):
        raise UpcertError(f"{where}: ntp must be \"ok\" or \"unreachable\", not {cfg['ntp']!r}")
    for key in ("flash_size", "nvs_size"):
        v = cfg[key]
        if not isinstance(v, int) or v <= 0 or v % SECTOR:
            raise UpcertError(f"{where}: {key} {v!r} must be a positive multiple of 4096")
    check_chip(cfg["atecc608"], where)
    cut = cfg["power_cut_after_writes"]
    if not isinstance(cut, int) or isinstance(cut, bool) or not 0 <= cut < 2**32:
        raise UpcertError(f"{where}: power_cut_after_writes {cut!r} must be a whole number "
                          "of writes (0: never cut)")
    if cfg["nvs_size"] < 3 * SECTOR:
        raise UpcertError(f"{where}: nvs_size must be at least 12288 (ESP-IDF needs 3 pages)")
    resolve_partitions(cfg, where)


def chip_setting(layout, current=None):
    """board.json "atecc608" for a --atecc608 option: None for "none", else the layout at its
    default address (or at the address already configured for that layout)."""
    if layout == "none":
        return None
    if layout not in LAYOUTS:
        raise UpcertError(f"--atecc608 {layout!r}: use one of {', '.join(LAYOUTS)} or none")
    if isinstance(current, dict) and current.get("layout") == layout and "address" in current:
        return dict(current)
    return {"layout": layout, "address": DEFAULT_ADDRESS[layout]}


def check_chip(chip, where):
    """Raise UpcertError unless `chip` is a valid board.json "atecc608" value."""
    if chip is None:
        return
    form = '{"layout": "blank" or "tng", "address": 96}'
    if not isinstance(chip, dict) or set(chip) - {"layout", "address"} or \
            chip.get("layout") not in LAYOUTS:
        raise UpcertError(f"{where}: atecc608 {chip!r} must be null (no chip) or {form}")
    addr = chip.get("address", DEFAULT_ADDRESS[chip["layout"]])
    if not isinstance(addr, int) or isinstance(addr, bool) or not 0x08 <= addr <= 0x77:
        raise UpcertError(f"{where}: atecc608 address {addr!r} must be a 7-bit I2C address "
                          "8-119 (96 = 0x60 for a blank chip, 53 = 0x35 for Trust&Go)")


def resolve_partitions(cfg, where="board.json"):
    """The partition table with numeric type/subtype and offsets laid out like ESP-IDF's
    gen_esp32part.py (data aligned to 4 KiB, app to 64 KiB, from 0x9000 on)."""
    parts = cfg["partitions"]
    if not isinstance(parts, list) or not parts:
        raise UpcertError(f"{where}: partitions must be a non-empty list of "
                          '{"label", "type", "subtype", "size"} objects')
    out, labels, end = [], set(), FIRST_OFFSET
    for i, p in enumerate(parts):
        what = f"{where}: partitions[{i}]"
        if not isinstance(p, dict) or not {"label", "type", "subtype", "size"} <= set(p):
            raise UpcertError(f"{what} needs label, type, subtype and size")
        label = p["label"]
        if not isinstance(label, str) or not _LABEL_RE.match(label) or label in labels:
            raise UpcertError(f"{what}: label {label!r} must be 1-16 letters, digits, _ or -, "
                              "and unique")
        labels.add(label)
        ptype = _number(p["type"], TYPES, f"{what}: type")
        names = SUBTYPES.get(p["type"], {}) if isinstance(p["type"], str) else {}
        subtype = _number(p["subtype"], names, f"{what}: subtype")
        size = p["size"]
        if not isinstance(size, int) or size <= 0 or size % SECTOR:
            raise UpcertError(f"{what}: size {size!r} must be a positive multiple of 4096")
        align = 0x10000 if ptype == 0 else SECTOR
        offset = p.get("offset", (end + align - 1) // align * align)
        if not isinstance(offset, int) or offset % align or offset < end:
            raise UpcertError(f"{what}: offset {offset!r} must be a multiple of {align:#x} "
                              f"at or after {end:#x} (partitions may not overlap)")
        end = offset + size
        out.append({"label": label, "type": ptype, "subtype": subtype, "offset": offset,
                    "size": size})
    sizes = {p["label"]: p for p in out}
    for label, key, kind in (("vfs", "flash_size", "the littlefs root, flash.img"),
                             ("nvs", "nvs_size", "esp32.NVS, nvs.bin")):
        if label not in sizes or sizes[label]["type"] != 1:
            raise UpcertError(f"{where}: partitions need a data partition labelled {label!r} "
                              f"({kind})")
        if sizes[label]["size"] != cfg[key]:
            raise UpcertError(f"{where}: partition {label!r} has size {sizes[label]['size']} "
                              f"but {key} is {cfg[key]}; make them equal")
    return out


def _number(value, names, what):
    if isinstance(value, int) and 0 <= value <= 0xFE:
        return value
    if isinstance(value, str) and value in names:
        return names[value]
    choices = ", ".join(names) if names else "a number 0-254"
    raise UpcertError(f"{what} {value!r} is not one of: {choices}")


def heap_bytes(heapsize):
    """'156K' -> 159744."""
    mult = {"K": 1024, "M": 1024 * 1024}.get(heapsize[-1], 1)
    return int(heapsize.rstrip("KM")) * mult


def reset_rtc(state_dir, clock):
    """Power-on value of the board's RTC (<state>/rtc.bin, an int64 offset in microseconds
    from the host clock): the host's time for clock "set", 2000-01-01 UTC for "unset"."""
    offset = 0 if clock == "set" else 946684800 * 1000000 - time.time_ns() // 1000
    with open_private(Path(state_dir) / "rtc.bin", "wb") as f:
        f.write(struct.pack("<q", offset))


POWERCUT = "powercut.bin"  # count u32, limit u32 (0: disarmed), cuts fired u32 (emu_cut.py)


def write_powercut(state_dir, count, limit, fired):
    """Set the board's write counter, the write after which the power is cut, and the number
    of cuts fired. The board reads it at every flash write, so this works while it runs."""
    path = Path(state_dir) / POWERCUT
    with open_private(path, "r+b") as f:
        f.write(struct.pack("<III", count, limit, fired))


def read_powercut(state_dir):
    """(writes counted, armed limit or 0, cuts fired) of the board in state_dir."""
    try:
        data = (Path(state_dir) / POWERCUT).read_bytes()
    except FileNotFoundError:
        return 0, 0, 0
    return struct.unpack("<III", data[:12]) if len(data) >= 12 else (0, 0, 0)


def read_partition_csv(path):
    """An ESP-IDF partition table CSV (Name, Type, SubType, Offset, Size, Flags) as board.json
    "partitions" entries: sizes and offsets may be hex, decimal or end in K/M."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cols = [c.strip() for c in line.split(",")] + [""] * 5
        name, ptype, sub, offset, size = cols[:5]
        where = f"{path}:{n}"
        if not name or not ptype or not size:
            raise UpcertError(f"{where}: need Name, Type, SubType, Offset, Size; got {line!r}")
        entry = {"label": name, "type": ptype if ptype in TYPES else _csv_int(ptype, where),
                 "subtype": _csv_int(sub, where) if sub[:1].isdigit() else sub or 0,
                 "size": _csv_int(size, where)}
        if offset:
            entry["offset"] = _csv_int(offset, where)
        out.append(entry)
    return out


def _csv_int(text, where):
    mult = {"K": 1024, "M": 1024 * 1024}.get(text[-1:].upper(), 1)
    try:
        return int(text[:-1] if mult > 1 else text, 0) * mult
    except ValueError:
        raise UpcertError(f"{where}: {text!r} is not a number (0x..., decimal, or with K/M)") from None


def table_settings(csv_path):
    """board.json settings for a partition table CSV: partitions, flash_size (vfs), nvs_size."""
    parts = read_partition_csv(csv_path)
    sizes = {p["label"]: p["size"] for p in parts}
    if "vfs" not in sizes or "nvs" not in sizes:
        raise UpcertError(f"{csv_path}: the emulated board needs partitions 'nvs' and 'vfs'")
    return {"partitions": parts, "flash_size": sizes["vfs"], "nvs_size": sizes["nvs"]}


def use_table(state_dir, csv_path):
    """Give the board in state_dir the partition table of an ESP-IDF CSV (board.json
    partitions, flash_size, nvs_size), as flashing a custom table does on an ESP32. Refused
    while the board runs, or when its flash.img/nvs.bin were made for other sizes. Returns the
    settings."""
    from upcert.procs import running_pid

    state = Path(state_dir)
    if not Path(csv_path).is_file():
        raise UpcertError(f"partition table {csv_path} not found: give an ESP-IDF partition "
                          "CSV, e.g. boards/esp32_generic/partitions.csv")
    table = table_settings(csv_path)
    pid = running_pid(state / "board.pid")
    if pid:
        raise UpcertError(f"the board in {state} runs (pid {pid}): stop it before changing its "
                          "partition table (`upcert board stop`)")
    for name, key, part in (("flash.img", "flash_size", "vfs"), ("nvs.bin", "nvs_size", "nvs")):
        path = state / name
        if path.exists() and path.stat().st_size != table[key]:
            raise UpcertError(
                f"{path} has {path.stat().st_size} bytes, but {csv_path} makes {part} "
                f"{table[key]} bytes: delete {path} (on an ESP32: erase that region) and "
                "provision the board again")
    cfg = dict(load(state), **table)
    path = state / "board.json"
    check(cfg, path)
    _save(path, cfg)
    return cfg


def use_images(state_dir, images_dir):
    """Give the board in state_dir exactly the flash an image folder (`upcert image build`)
    describes, as writing those images with esptool would: its partition table from
    partition-table.bin, its littlefs root from vfs.bin, its nvs partition from nvs.bin (erased
    when the folder has none), every other partition from its image or erased. Each file is
    checked against the manifest's SHA-256 first. Refused while the board runs. Returns the
    settings."""
    import hashlib
    import shutil

    from upcert.procs import running_pid

    state, folder = Path(state_dir), Path(images_dir)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise UpcertError(f"{folder} holds no manifest.json: build it with `upcert image build`")
    try:
        files = json.loads(manifest_path.read_text())["files"]
        by_name = {f["file"]: f for f in files}
    except (ValueError, KeyError, TypeError) as e:
        raise UpcertError(f"{manifest_path} is not an image manifest ({e})") from None
    for f in files:
        data = (folder / f["file"]).read_bytes() if (folder / f["file"]).exists() else None
        if data is None or hashlib.sha256(data).hexdigest() != f["sha256"]:
            raise UpcertError(f"{folder / f['file']} is missing or differs from its manifest "
                              "(sha256): build the images again")
    if "partition-table.bin" not in by_name:
        raise UpcertError(f"{manifest_path} lists no partition-table.bin")
    table = _binary_table((folder / "partition-table.bin").read_bytes())
    pid = running_pid(state / "board.pid")
    if pid:
        raise UpcertError(f"the board in {state} runs (pid {pid}): stop it before writing its "
                          "flash (`upcert board stop`)")
    sizes = {p["label"]: p["size"] for p in table}
    if "vfs" not in sizes or "nvs" not in sizes:
        raise UpcertError("the image's partition table lacks 'nvs' or 'vfs', which the board "
                          "mounts")
    private_dir(state)
    cfg = load(state)
    cfg.update(partitions=table, flash_size=sizes["vfs"], nvs_size=sizes["nvs"])
    check(cfg, state / "board.json")
    by_part = {f["partition"]: f for f in files if f.get("partition")}
    for p in table:
        label = p["label"]
        name = {"vfs": "flash.img", "nvs": "nvs.bin"}.get(label, f"part-{label}.bin")
        f = by_part.get(label)
        if f is not None and (f["offset"] != p["offset"] or f["size"] != p["size"]):
            raise UpcertError(f"{f['file']} is for offset {f['offset']:#x}, {f['size']} bytes, "
                              f"but the table puts {label} at {p['offset']:#x}, {p['size']} "
                              "bytes: build the images again")
        if f is None:  # erased, as `esptool erase-flash` before the write leaves it: the
            if (state / name).exists():  # board makes a missing image erased
                (state / name).unlink()
            continue
        tmp = state / (name + ".tmp")
        shutil.copyfile(folder / f["file"], tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, state / name)
    _save(state / "board.json", cfg)
    return cfg


def _binary_table(binary):
    """board.json partitions from an ESP-IDF binary partition table (esp-idf-defs reads it and
    checks its MD5 row)."""
    from esp_idf_defs.partitions import InputError, PartitionTable

    try:
        table = PartitionTable.from_binary(binary)
    except InputError as e:
        raise UpcertError(f"partition-table.bin is not an ESP-IDF partition table: {e}") from None
    return [{"label": p.name, "type": p.type, "subtype": p.subtype, "offset": p.offset,
             "size": p.size} for p in table]
