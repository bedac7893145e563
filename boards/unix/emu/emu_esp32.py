# `esp32` stand-in: the NVS and Partition classes of the ESP32 port, emulated over files, and
# idf_heap_info as the emulated board's memory really is.
from emu_nvs import NVS  # noqa: F401
from emu_partition import Partition  # noqa: F401

# ports/esp32/modesp32.c: HEAP_DATA is MALLOC_CAP_8BIT, HEAP_EXEC is MALLOC_CAP_EXEC.
HEAP_DATA = 4
HEAP_EXEC = 1


def idf_heap_info(cap):
    """As on the ESP32 (docs/library/esp32.rst): a list of (total, free, largest free block,
    minimum free) per ESP-IDF heap region. The emulated board's GC heap is fixed at the size an
    ESP32's reaches after growing once (boards/unix/README.md, "Memory"), and its mbedTLS
    allocates inside it, so there is no further IDF memory: one region, the GC heap itself,
    with nothing free to grow into. heap_room() then counts gc.mem_free() alone, which is the
    truth here."""
    if cap != HEAP_DATA:
        return []
    import gc

    total = gc.mem_free() + gc.mem_alloc()
    return [(total, 0, 0, 0)]
