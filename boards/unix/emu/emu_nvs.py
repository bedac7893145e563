# esp32.NVS stand-in (also the device tests' esp32.NVS: tests/device/fakes/esp32.py). The model,
# ESP-IDF's documented one (boards/unix/README.md, "NVS"): a set or an erase is visible at once
# through every NVS object of this boot (one working copy); commit() writes the working copy to
# <state>/nvs.bin, and only then is it sure to survive a power cut: uncommitted changes die with
# the interpreter (nvs_commit: "must be called to ensure changes are written"). The file holds two
# copies (A at 0, B at half) with a sequence number and CRC-32; the newest valid copy wins, so a
# power cut during commit() keeps the previous commit. Not ESP-IDF's page format (a later issue).
import binascii
import struct

import emu_cut
import emu_err
from emu_err import esp_error
from micropython import const

_MAGIC = b"UPNV"
_HDR = "<4sIII"  # magic, sequence, payload length, crc32(sequence, length, payload)
_HDR_LEN = const(16)
_REC = "<BBBH"  # type, namespace length, key length, value length
_REC_LEN = const(5)
_T_I32 = const(1)
_T_BLOB = const(2)
_MAX_KEY = const(15)  # ESP-IDF: keys and namespaces are at most 15 characters
_MAX_NS = const(254)  # ESP-IDF: at most 254 namespaces per partition

_store = None


class NvsStore:
    """The working copy of all namespaces plus its two-copy file `f` of `size` bytes."""

    def __init__(self, f, size):
        self._f = f
        self._half = size // 2
        self.capacity = self._half - _HDR_LEN
        self._seq = 0
        self._slot = 1  # the slot of the newest valid copy; commit() writes the other one
        self.data = {}  # namespace -> {key: (type, value)}
        self.used = 0
        self._dirty = False

    def load(self):
        """Read the newest valid copy from the file (an erased file is an empty store)."""
        best = None
        for slot in (0, 1):
            self._f.seek(slot * self._half)
            hdr = self._f.read(_HDR_LEN)
            if not hdr or len(hdr) < _HDR_LEN:
                continue
            magic, seq, n, crc = struct.unpack(_HDR, hdr)
            if magic != _MAGIC or n > self.capacity:
                continue
            payload = self._f.read(n)
            if len(payload) == n and _crc(seq, n, payload) == crc:
                if best is None or seq > best[1]:
                    best = (slot, seq, payload)
        if best is not None:
            self._slot, self._seq = best[0], best[1]
            self._parse(best[2])
        return self

    def _parse(self, payload):
        i = 0
        while i < len(payload):
            t, nl, kl, vl = struct.unpack_from(_REC, payload, i)
            i += _REC_LEN
            ns = payload[i:i + nl].decode()
            key = payload[i + nl:i + nl + kl].decode()
            raw = payload[i + nl + kl:i + nl + kl + vl]
            i += nl + kl + vl
            value = struct.unpack("<i", raw)[0] if t == _T_I32 else bytes(raw)
            self.put(ns, key, t, value)
        self._dirty = False

    def put(self, ns, key, t, value):
        """Set ns/key; raises NOT_ENOUGH_SPACE (nothing changes) when it would not fit."""
        entries = self.data.get(ns)
        if entries is None:
            if len(self.data) >= _MAX_NS:
                raise esp_error(emu_err.ESP_ERR_NVS_NOT_ENOUGH_SPACE)
            entries = {}
        old = entries.get(key)
        used = self.used - (_size(ns, key, old) if old else 0) + _size(ns, key, (t, value))
        if used > self.capacity:
            raise esp_error(emu_err.ESP_ERR_NVS_NOT_ENOUGH_SPACE)
        entries[key] = (t, value)
        self.data[ns] = entries
        self.used = used
        self._dirty = True

    def remove(self, ns, key):
        entries = self.data.get(ns) or {}
        old = entries.pop(key, None)
        if old is None:
            raise esp_error(emu_err.ESP_ERR_NVS_NOT_FOUND)
        self.used -= _size(ns, key, old)
        self._dirty = True

    def commit(self):
        """Write the working copy to the older of the two file copies."""
        if not self._dirty:
            return
        out = bytearray()
        for ns, entries in self.data.items():
            for key, (t, value) in entries.items():
                raw = struct.pack("<i", value) if t == _T_I32 else value
                out += struct.pack(_REC, t, len(ns), len(key), len(raw))
                out += ns.encode() + key.encode() + raw
        seq = self._seq + 1
        slot = 1 - self._slot
        self._f.seek(slot * self._half)
        self._f.write(struct.pack(_HDR, _MAGIC, seq, len(out), _crc(seq, len(out), out)) + out)
        self._seq, self._slot, self._dirty = seq, slot, False
        emu_cut.wrote()


def _crc(seq, n, payload):
    return binascii.crc32(payload, binascii.crc32(struct.pack("<II", seq, n))) & 0xFFFFFFFF


def _size(ns, key, item):
    t, value = item
    return _REC_LEN + len(ns) + len(key) + (4 if t == _T_I32 else len(value))


def install(store):
    """Make `store` (an NvsStore, loaded) the partition behind every esp32.NVS object."""
    global _store
    _store = store


def _name(name):
    if not isinstance(name, str):
        raise TypeError("NVS namespaces and keys must be str")
    n = len(name.encode())
    if n == 0:
        raise esp_error(emu_err.ESP_ERR_NVS_INVALID_NAME)
    if n > _MAX_KEY:
        raise esp_error(emu_err.ESP_ERR_NVS_KEY_TOO_LONG)
    return name


class NVS:
    """One NVS namespace (esp32.NVS): set_i32/get_i32, set_blob/get_blob, erase_key, commit."""

    def __init__(self, namespace):
        if _store is None:
            raise esp_error(emu_err.ESP_ERR_NVS_NOT_INITIALIZED)
        self._ns = _name(namespace)

    def _get(self, key, t):
        item = (_store.data.get(self._ns) or {}).get(_name(key))
        if item is None or item[0] != t:
            # ESP-IDF looks items up by name and type: another type reads as not found.
            raise esp_error(emu_err.ESP_ERR_NVS_NOT_FOUND)
        return item[1]

    def set_i32(self, key, value):
        if not isinstance(value, int):
            raise TypeError("can't convert %s to int" % type(value).__name__)
        if not -0x80000000 <= value <= 0x7FFFFFFF:
            # The ESP32's machine word is 32 bits: mp_obj_get_int() overflows first.
            raise OverflowError("overflow converting long int to machine word")
        _store.put(self._ns, _name(key), _T_I32, value)

    def get_i32(self, key):
        return self._get(key, _T_I32)

    def set_blob(self, key, value):
        key = _name(key)
        if isinstance(value, int):
            raise TypeError("object with buffer protocol required")
        raw = value.encode() if isinstance(value, str) else bytes(value)
        if _REC_LEN + len(self._ns) + len(key) + len(raw) > _store.capacity:
            # Can never fit, even in an empty partition.
            raise esp_error(emu_err.ESP_ERR_NVS_VALUE_TOO_LONG)
        _store.put(self._ns, key, _T_BLOB, raw)

    def get_blob(self, key, buf):
        """Copy the blob into `buf` (writable buffer); returns its length."""
        raw = self._get(key, _T_BLOB)
        if len(buf) < len(raw):
            raise esp_error(emu_err.ESP_ERR_NVS_INVALID_LENGTH)
        buf[0:len(raw)] = raw
        return len(raw)

    def erase_key(self, key):
        _store.remove(self._ns, _name(key))

    def commit(self):
        _store.commit()

    def __repr__(self):
        return "<NVS namespace>"
