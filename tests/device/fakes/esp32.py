# Test stand-in for the ESP32 port's esp32.NVS, behaving like ports/esp32/esp32_nvs.c over
# ESP-IDF: OSError(-4354) for a missing key, OSError(-4364) when the buffer is too small,
# and set/erase only visible to a new handle after commit().
_ESP_ERR_NVS_NOT_FOUND = -4354
_ESP_ERR_NVS_INVALID_LENGTH = -4364

_committed = {}  # namespace -> {key: bytes}


def reset():
    """Forget every namespace (test helper, not part of the real module)."""
    _committed.clear()


class NVS:
    def __init__(self, namespace):
        if not isinstance(namespace, str) or not 0 < len(namespace) <= 15:
            raise ValueError("namespace must be 1..15 chars")
        self._ns = namespace
        self._live = dict(_committed.get(namespace, {}))
        self.calls = []

    def get_blob(self, key, buf):
        self.calls.append(("get_blob", key, len(buf)))
        if key not in self._live:
            raise OSError(_ESP_ERR_NVS_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")
        data = self._live[key]
        if len(buf) < len(data):
            raise OSError(_ESP_ERR_NVS_INVALID_LENGTH, "ESP_ERR_NVS_INVALID_LENGTH")
        buf[: len(data)] = data
        return len(data)

    def set_blob(self, key, value):
        self.calls.append(("set_blob", key, len(value)))
        if len(key) > 15:
            raise OSError(-4361, "ESP_ERR_NVS_KEY_TOO_LONG")
        self._live[key] = bytes(value)

    def erase_key(self, key):
        self.calls.append(("erase_key", key))
        if key not in self._live:
            raise OSError(_ESP_ERR_NVS_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")
        del self._live[key]

    def commit(self):
        self.calls.append(("commit",))
        _committed[self._ns] = dict(self._live)


# idf_heap_info (ports/esp32/modesp32.c): a list of (total, free, largest free block, min free)
# per ESP-IDF heap region with the capabilities asked for; HEAP_DATA is MALLOC_CAP_8BIT (4),
# HEAP_EXEC MALLOC_CAP_EXEC (1). Tests set `regions`.
HEAP_DATA = 4
HEAP_EXEC = 1
regions = []


def idf_heap_info(cap):
    return list(regions) if cap == HEAP_DATA else []
