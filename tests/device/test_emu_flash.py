# Device tests of the emulated flash (emu_flash.py) and esp32.Partition (emu_partition.py).
import gc
import os
import sys

import vfs

sys.path.insert(0, ("/".join(__file__.split("/")[:-3]) or ".") + "/boards/unix/emu")
import emu_partition  # noqa: E402
from emu_flash import FlashFile, open_image  # noqa: E402
from emu_partition import Partition  # noqa: E402

_TMP = os.getenv("UPCERT_TEST_TMP") or "/tmp"


def _image(name, size):
    path = _TMP + "/" + name
    try:
        os.remove(path)
    except OSError:
        pass
    return FlashFile(open_image(path, size), size), path


def _install():
    app, _ = _image("app.bin", 65536)
    data, _ = _image("data.bin", 16384)
    emu_partition.install([("nvs", 1, 2, 0x9000, 16384, data),
                           ("factory", 0, 0, 0x10000, 65536, app),
                           ("vfs", 1, 0x81, 0x20000, 16384, data)])


def _errno(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return e.args[0]
    raise AssertionError("no OSError")


def test_new_image_is_erased_and_nor_semantics():
    fl, path = _image("nor.bin", 8192)
    if os.stat(path)[6] != 8192:
        raise AssertionError("size")
    buf = bytearray(4)
    fl.read(100, buf)
    if buf != b"\xff" * 4:
        raise AssertionError("a new image reads erased")
    fl.program(100, b"\x0f\x0f\xff\xff")
    fl.program(100, b"\xf0\xff\x00\xff")
    fl.read(100, buf)
    if buf != b"\x00\x0f\x00\xff":
        raise AssertionError("programming may only clear bits: %r" % buf)
    fl.erase(0, 4096)
    fl.read(100, buf)
    if buf != b"\xff" * 4:
        raise AssertionError("erase sets 0xFF")


def test_littlefs_on_flash_and_finaliser_flush():
    fl, path = _image("lfs.bin", 64 * 4096)
    vfs.VfsLfs2.mkfs(fl)
    vfs.mount(vfs.VfsLfs2(fl), "/t_lfs")
    with open("/t_lfs/a.txt", "w") as f:
        f.write("x" * 5000)
    open("/t_lfs/b.txt", "w").write("left open")  # closed by its finaliser...
    gc.collect()  # ...which runs with the heap locked: the flash must not allocate
    vfs.umount("/t_lfs")
    fl2 = FlashFile(open(path, "r+b"), 64 * 4096)
    vfs.mount(vfs.VfsLfs2(fl2), "/t_lfs")
    try:
        if open("/t_lfs/a.txt").read() != "x" * 5000:
            raise AssertionError("a.txt")
        if open("/t_lfs/b.txt").read() != "left open":
            raise AssertionError("a file closed by the GC must be flushed")
    finally:
        vfs.umount("/t_lfs")


def test_partition_find_and_info():
    _install()
    data = [p.info()[4] for p in Partition.find(Partition.TYPE_DATA)]
    if data != ["nvs", "vfs"]:
        raise AssertionError(data)
    if [p.info()[4] for p in Partition.find()] != ["factory"]:
        raise AssertionError("default type is TYPE_APP")
    if len(Partition.find(Partition.TYPE_DATA, 2)) != 1:
        raise AssertionError("subtype filter")
    if Partition.find(Partition.TYPE_DATA, label="vfs")[0].info() != (1, 0x81, 0x20000, 16384,
                                                                       "vfs", False):
        raise AssertionError("info")
    if Partition(Partition.RUNNING).info()[4] != "factory":
        raise AssertionError("running")
    if _errno(Partition, "nope") != 2:
        raise AssertionError("unknown label: ENOENT")
    try:
        Partition(7)
        raise AssertionError("no ValueError")
    except ValueError:
        pass
    if _errno(Partition("factory").get_next_update) != 2:
        raise AssertionError("no OTA partitions: ENOENT")


def test_partition_block_io():
    _install()
    p = Partition("factory")
    if (p.ioctl(4, 0), p.ioctl(5, 0)) != (16, 4096):
        raise AssertionError("ioctl 4/5")
    p.writeblocks(1, b"\x0f" * 4096)
    p.writeblocks(1, b"\xf0" * 16, 8)  # with an offset: no erase, bits only clear
    buf = bytearray(32)
    p.readblocks(1, buf)
    if buf != b"\x0f" * 8 + b"\x00" * 16 + b"\x0f" * 8:
        raise AssertionError("offset write: %r" % buf)
    p.writeblocks(1, b"\xf0" * 4096)  # without: erase first
    p.readblocks(1, buf, 4)
    if buf != b"\xf0" * 32:
        raise AssertionError("erase before write")
    if p.ioctl(6, 1) != 0:
        raise AssertionError("ioctl 6")
    p.readblocks(1, buf)
    if buf != b"\xff" * 32:
        raise AssertionError("erased block")
    if _errno(p.readblocks, 16, buf) != -0x104:
        raise AssertionError("read past the end: ESP_ERR_INVALID_SIZE")
    if _errno(p.readblocks, 17, buf) != -0x102:
        raise AssertionError("offset past the end: ESP_ERR_INVALID_ARG")
    if _errno(p.writeblocks, 0, b"short") != -0x104:
        raise AssertionError("an erase needs whole sectors")
