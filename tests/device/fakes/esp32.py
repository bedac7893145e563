# Test stand-in for the ESP32 port's esp32 module. NVS is the emulated board's own stand-in
# (boards/unix/emu/emu_nvs.py) over an in-memory nvs partition, so the device tests and the
# emulated board share one model of ESP-IDF's NVS (boards/unix/README.md, "NVS"): a set or an
# erase is visible at once through every handle and reaches the flash at commit(); power_cut()
# loses what was not committed. Errors are the port's: OSError(-4354) for a missing key,
# OSError(-4364) when the buffer is too small (ports/esp32/esp32_nvs.c).
import io
import sys

sys.path.append((__file__.rsplit("/", 1)[0] if "/" in __file__ else ".") + "/../../../boards/unix/emu")
import emu_nvs  # noqa: E402

NVS_SIZE = 24576  # the nvs partition of MicroPython's partitions-4MiB.csv (0x6000)
_flash = [None]  # the in-memory partition


def reset(size=NVS_SIZE):
    """An erased nvs partition behind every NVS object (test helper, not in the real module)."""
    _flash[0] = io.BytesIO(b"\xff" * size)
    power_cut()


def power_cut():
    """Cut the power and boot again (test helper): what was set or erased since the last commit()
    is lost, as ESP-IDF's documentation allows; handles then read the partition again."""
    f = _flash[0]
    emu_nvs.install(emu_nvs.NvsStore(f, len(f.getvalue())).load())


class NVS(emu_nvs.NVS):
    """esp32.NVS(namespace), the emulated board's, recording its calls in `calls` for tests."""

    def __init__(self, namespace):
        super().__init__(namespace)
        self.calls = []

    def get_blob(self, key, buf):
        self.calls.append(("get_blob", key, len(buf)))
        return super().get_blob(key, buf)

    def set_blob(self, key, value):
        self.calls.append(("set_blob", key, len(value)))
        return super().set_blob(key, value)

    def erase_key(self, key):
        self.calls.append(("erase_key", key))
        return super().erase_key(key)

    def commit(self):
        self.calls.append(("commit",))
        return super().commit()


reset()

# idf_heap_info (ports/esp32/modesp32.c): a list of (total, free, largest free block, min free)
# per ESP-IDF heap region with the capabilities asked for; HEAP_DATA is MALLOC_CAP_8BIT (4),
# HEAP_EXEC MALLOC_CAP_EXEC (1). Tests set `regions`.
HEAP_DATA = 4
HEAP_EXEC = 1
regions = []


def idf_heap_info(cap):
    return list(regions) if cap == HEAP_DATA else []
