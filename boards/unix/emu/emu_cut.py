# Power-cut injection: counts every persistent write (flash erase/program, NVS commit) in
# <state>/powercut.bin and, right after the armed Nth one, has the host cut the power.
# File: count u32 | limit u32 (0: disarmed) | cuts fired u32, little-endian; the host arms it.
import emu_host

_f = None  # the open (r+b) powercut.bin; None when the host made none
_buf = bytearray(12)


def install(f):
    """Count writes in the open file `f` (opened before the root is unmounted)."""
    global _f
    _f = f


def _u32(b, i):
    return b[i] | b[i + 1] << 8 | b[i + 2] << 16 | b[i + 3] << 24


def wrote():
    """One persistent write has reached the flash. Allocates nothing (littlefs may call this
    from a finaliser while the heap is locked); never returns when the cut is due."""
    f, b = _f, _buf
    if f is None:
        return
    f.seek(0)
    f.readinto(b)
    n = _u32(b, 0) + 1
    b[0], b[1], b[2], b[3] = n & 255, n >> 8 & 255, n >> 16 & 255, n >> 24 & 255
    f.seek(0)
    f.write(b, 4)
    limit = _u32(b, 4)
    if limit and n >= limit:
        emu_host.power_cut()
