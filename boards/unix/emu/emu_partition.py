# esp32.Partition stand-in over the emulated flash: table from board.json (resolved by the
# host), NOR semantics from emu_flash. API and errors follow ports/esp32/esp32_partition.c.
import errno

import emu_err
from emu_flash import SECTOR
from micropython import const

_TYPE_APP = const(0)
_TYPE_DATA = const(1)
_BOOT = const(0)
_RUNNING = const(1)
_ANY = const(0xFF)

_table = []  # [(label, type, subtype, address, size, FlashFile)], in partition-table order


def install(entries):
    """Use `entries` [(label, type, subtype, address, size, flash)] as the partition table."""
    _table[:] = entries


def _check_range(part, off, size):
    # esp_partition_read/write/erase_range bounds checks (ESP-IDF esp_partition.c).
    if off < 0 or off > part[4]:
        raise emu_err.esp_error(emu_err.ESP_ERR_INVALID_ARG)
    if off + size > part[4]:
        raise emu_err.esp_error(emu_err.ESP_ERR_INVALID_SIZE)


class Partition:
    """A flash partition: Partition(label), Partition(Partition.BOOT | Partition.RUNNING)."""

    BOOT = _BOOT
    RUNNING = _RUNNING
    TYPE_APP = _TYPE_APP
    TYPE_DATA = _TYPE_DATA

    def __init__(self, id, block_size=SECTOR):
        if isinstance(id, tuple):  # from find(): the table entry itself, of any type
            found = [id]
        elif isinstance(id, int):
            if id not in (_BOOT, _RUNNING):
                raise ValueError("partition id must be Partition.BOOT, Partition.RUNNING or a label")
            # No otadata in the emulated table: boot and running are the first app partition.
            found = [p for p in _table if p[1] == _TYPE_APP]
        else:
            found = [p for p in _table if p[0] == id and p[1] == _TYPE_APP]
            found += [p for p in _table if p[0] == id and p[1] == _TYPE_DATA]
        if not found:
            raise OSError(errno.ENOENT)
        if block_size != SECTOR:
            raise ValueError("the emulated board supports block_size=4096 only")
        self._p = found[0]

    @staticmethod
    def find(type=_TYPE_APP, subtype=_ANY, label=None, block_size=SECTOR):
        """Partitions matching type, subtype (0xff: any) and label, in table order."""
        out = []
        for p in _table:
            # By entry, not by label: Partition(label) finds app and data types only (as
            # esp32_partition.c does), find() any type, e.g. esp_secure_cert's 0x3F.
            if p[1] == type and subtype in (_ANY, p[2]) and label in (None, p[0]):
                out.append(Partition(p, block_size))
        return out

    def info(self):
        """(type, subtype, address, size, label, encrypted)."""
        p = self._p
        return (p[1], p[2], p[3], p[4], p[0], False)

    def readblocks(self, block_num, buf, offset=0):
        off = block_num * SECTOR + offset
        _check_range(self._p, off, len(buf))
        self._p[5].read(off, buf)

    def writeblocks(self, block_num, buf, offset=None):
        off = block_num * SECTOR
        if offset is None:
            # Without an offset the port erases first (esp_partition_erase_range needs
            # a whole number of sectors), then writes.
            if len(buf) % SECTOR:
                raise emu_err.esp_error(emu_err.ESP_ERR_INVALID_SIZE)
            _check_range(self._p, off, len(buf))
            self._p[5].erase(off, len(buf))
        else:
            off += offset
        _check_range(self._p, off, len(buf))
        self._p[5].program(off, buf)

    def ioctl(self, cmd, arg):
        if cmd in (1, 2, 3):
            return 0
        if cmd == 4:
            return self._p[4] // SECTOR
        if cmd == 5:
            return SECTOR
        if cmd == 6:
            off = arg * SECTOR
            _check_range(self._p, off, SECTOR)
            self._p[5].erase(off, SECTOR)
            return 0
        return None

    def set_boot(self):
        """No OTA data partition on the emulated board: only the running app can boot."""
        if self._p[1] != _TYPE_APP:
            raise emu_err.esp_error(emu_err.ESP_ERR_INVALID_ARG)

    def get_next_update(self):
        """The next OTA app partition; the stock table has none (OSError ENOENT, as on a board)."""
        apps = [p for p in _table if p[1] == _TYPE_APP and 0x10 <= p[2] <= 0x1F]
        if not apps:
            raise OSError(errno.ENOENT)
        nxt = apps[0]
        for i, p in enumerate(apps):
            if p is self._p and i + 1 < len(apps):
                nxt = apps[i + 1]
        return Partition(nxt[0])

    def __repr__(self):
        p = self._p
        return "<Partition type=%d, subtype=%d, address=%d, size=%d, label=%s, encrypted=0>" % (
            p[1], p[2], p[3], p[4], p[0])
