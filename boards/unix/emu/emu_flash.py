# NOR flash over a file: erase sets bytes to 0xFF, programming can only clear bits
# (new = old & data), and each write goes straight to the file with write(2), so killing the
# interpreter (a power cut) loses nothing already written, as on a real flash chip.
import os

import emu_cut
from micropython import const

SECTOR = const(4096)  # ESP32 flash erase unit and MicroPython's block size for it
_ERASED = b"\xff" * SECTOR
_scratch = None  # one sector of scratch space shared by all FlashFiles (one thread)


def open_image(path, size):
    """Open `path` (r+b) as a flash image of `size` bytes, creating or extending it erased."""
    try:
        have = os.stat(path)[6]
    except OSError:
        have = -1
    f = open(path, "wb" if have < 0 else "r+b")
    if have < size:
        f.seek(max(have, 0))
        left = size - max(have, 0)
        while left > 0:
            n = min(left, SECTOR)
            f.write(_ERASED, n)
            left -= n
    if have < 0:
        f.close()
        f = open(path, "r+b")
    return f


class FlashFile:
    """`size` bytes of flash stored in the open (r+b) file `f` from byte `base` on.

    Also a MicroPython block device (extended interface, 4096-byte blocks) for vfs.VfsLfs2.
    Reading, programming and erasing allocate nothing on the heap: littlefs may call them
    from a file's finaliser while the GC holds the heap locked, as at a soft reset."""

    def __init__(self, f, size, base=0):
        self._f = f
        self.size = size
        self._base = base
        global _scratch
        if _scratch is None:
            _scratch = bytearray(SECTOR)

    def read(self, off, buf):
        """Fill `buf` from flash offset `off`."""
        self._f.seek(self._base + off)
        n = self._f.readinto(buf) or 0
        for i in range(n, len(buf)):  # beyond the end of a short file: erased flash
            buf[i] = 0xFF

    def program(self, off, data):
        """Write `data` at `off` without erasing: bits only go from 1 to 0."""
        done, total, s = 0, len(data), _scratch
        while done < total:
            n = min(total - done, SECTOR)
            self._f.seek(self._base + off + done)
            got = self._f.readinto(s, n) or 0
            for i in range(n):
                s[i] = (s[i] if i < got else 0xFF) & data[done + i]
            self._f.seek(self._base + off + done)
            self._f.write(s, n)
            done += n
        emu_cut.wrote()

    def erase(self, off, size):
        """Set `size` bytes from `off` to 0xFF (callers align both to SECTOR)."""
        self._f.seek(self._base + off)
        while size > 0:
            n = min(size, SECTOR)
            self._f.write(_ERASED, n)
            size -= n
        emu_cut.wrote()

    # Block protocol (docs.micropython.org "Filesystems": extended block device interface).
    def readblocks(self, block, buf, off=0):
        self.read(block * SECTOR + off, buf)

    def writeblocks(self, block, buf, off=None):
        if off is None:
            # Simple interface: erase the blocks covered, then write.
            self.erase(block * SECTOR, (len(buf) + SECTOR - 1) // SECTOR * SECTOR)
            off = 0
        self.program(block * SECTOR + off, buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.size // SECTOR
        if op == 5:  # block size
            return SECTOR
        if op == 6:  # erase a block
            self.erase(arg * SECTOR, SECTOR)
            return 0
        if op in (1, 2, 3):  # init, deinit, sync: writes are already on the file
            return 0
        return None
