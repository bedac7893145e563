# esp32.NVS stand-in (also the device tests' esp32.NVS: tests/device/fakes/esp32.py), over the
# board's `nvs` partition in ESP-IDF's own NVS format (ESP-IDF Programming Guide, "Non-Volatile
# Storage Library", section "Internals"): pages of 4096 bytes, each a 32-byte header (state, seq,
# version 0xFE, CRC-32), a 32-byte bitmap of 2-bit entry states (11 empty, 10 written, 00
# erased) and 126 entries of 32 bytes (namespace index, type, span, chunk index, CRC-32, key[16],
# data[8]). Namespaces are U8 entries in namespace 0; a blob is version-2 BLOB_DATA chunks that
# never cross a page, then a BLOB_IDX entry (size, chunk count, chunk start 0x00 or 0x80). So an
# image made by Espressif's esp-idf-nvs-partition-gen loads here, and what this writes is a
# partition ESP-IDF reads (tests/host/test_nvs_format.py checks both with the generator).
#
# The model (boards/unix/README.md, "NVS: what it models"): a set or an erase is visible at once
# through every NVS object of this boot (one working copy); commit() writes the changed keys to
# flash, each as ESP-IDF writes one: the new entries are programmed and marked written, then the
# old ones marked erased. Only then is a change sure to survive a power cut (nvs_commit: "must be
# called to ensure changes are written"). Every program and erase is a counted flash write
# (emu_flash.FlashFile -> emu_cut), so a power cut can fall between any two of them; the next
# load then does what ESP-IDF's recovery does: an entry whose CRC fails, or that was programmed
# but never marked written, is marked erased; a blob whose index or chunks are incomplete is
# dropped; of two whole versions of a key the newer (later page sequence, later entry) wins and
# the older is erased; a page left FREEING by garbage collection is copied again.
import binascii
import struct

import emu_err
from emu_err import esp_error
from emu_flash import FlashFile
from micropython import const

_PAGE = const(4096)
_N = const(126)  # entries per page
_E0 = const(64)  # first entry's offset in a page
_UNINIT = 0xFFFFFFFF  # page states (the header's first word)
_ACTIVE = 0xFFFFFFFE
_FULL = 0xFFFFFFFC
_FREEING = 0xFFFFFFF8
_VERSION = const(0xFE)  # NVS format version 2 (multi-page blobs)
_U8 = const(0x01)
_I32 = const(0x14)
_SZ = const(0x21)
_BLOB1 = const(0x41)  # version-1 blob, read only
_DATA = const(0x42)  # BLOB_DATA
_IDX = const(0x48)  # BLOB_IDX
_ANY = const(0xFF)
_CHUNK_MAX = const(4000)  # Page::CHUNK_MAX_SIZE: (126 - 1) entries of 32 bytes
_MAX_KEY = const(15)  # keys and namespaces are at most 15 characters
_MAX_NS = const(254)
_FF8 = b"\xff" * 8

_store = None


def _crc(data, crc=0xFFFFFFFF):
    # ESP-IDF's CRC-32 (esp_rom_crc32_le with 0xFFFFFFFF), which is zlib's crc32(data, 0xFFFFFFFF).
    return binascii.crc32(data, crc) & 0xFFFFFFFF


def _entry_crc(e):
    # An entry's CRC-32 covers bytes 0-3 and 8-31 (not the CRC field itself).
    return _crc(memoryview(e)[8:32], _crc(memoryview(e)[0:4]))


def _spans(n, nxt):
    # The chunks ESP-IDF's writeMultiPageBlob makes of an n-byte blob, starting on a page whose
    # next free entry is nxt: [(new page first?, chunk bytes)]. Shared by the capacity check
    # and the writer so that what set_blob() accepts is what commit() can lay out.
    out, left, first = [], n, True
    while True:
        tail = (_N - nxt - 1) * 32 if nxt < _N else 0
        if first and (tail < n or (tail == 0 and n == 0)) and tail < _CHUNK_MAX // 10:
            out.append((True, -1))  # too little room for a first chunk: start a new page
            nxt = 0
            continue
        c = min(left, tail)
        left -= c
        first = False
        out.append((False, c))
        nxt += 1 + (c + 31) // 32
        if left or tail - c < 32:
            out.append((True, -1))
            nxt = 0
        if not left:
            return out, nxt + 1


class NvsStore:
    """The working copy of all namespaces over the NVS partition in file `f` (`size` bytes)."""

    def __init__(self, f, size):
        self._fl = f if isinstance(f, FlashFile) else FlashFile(f, size)
        self._np = size // _PAGE
        self.max_blob = min(508000, size * 976 // 1000 - _CHUNK_MAX)  # NVS docs: blob limit
        self.data = {}  # namespace -> {key: (type, value)}: the working copy
        self._dirty = []  # (namespace, key) changed since the last commit, in order
        self._ns = {}  # namespace -> index
        self._recs = {}  # (ns index, key) -> [[page, entry, span, type, chunk], ...] on flash
        self._pages = []  # [state, seq, next free entry, erased entries, must erase first]
        self._act = None  # the active page
        self._bm = bytearray(32)
        self._e = bytearray(32)

    # -- flash primitives --------------------------------------------------------------------
    def _bitmap(self, p):
        self._fl.read(p * _PAGE + 32, self._bm)
        return self._bm

    def _mark(self, p, first, count, erased):
        """Entries first..first+count-1 of page p marked written (or erased): one flash write."""
        bm = self._bitmap(p)
        for i in range(first, first + count):
            bm[i >> 2] &= ~((3 if erased else 1) << ((i & 3) * 2))
        lo, hi = first >> 2, ((first + count - 1) >> 2) + 1
        self._fl.program(p * _PAGE + 32 + lo, memoryview(bm)[lo:hi])
        if erased:
            self._pages[p][3] += count

    def _set_state(self, p, state):
        self._fl.program(p * _PAGE, struct.pack("<I", state))
        self._pages[p][0] = state

    # -- loading ------------------------------------------------------------------------------
    def load(self):
        """Read the partition as ESP-IDF's nvs_flash_init does, with its recovery."""
        buf = bytearray(_PAGE)
        found = []  # [order, record [page, entry, span, type, chunk], ns index, key, value]
        freeing = None
        for p in range(self._np):
            self._fl.read(p * _PAGE, buf)
            state, seq = struct.unpack_from("<II", buf, 0)
            self._pages.append([state, seq, _N, 0, False])
            if state == _UNINIT:
                self._pages[p][4] = buf != b"\xff" * _PAGE  # garbage: erase before use
            elif state not in (_ACTIVE, _FULL, _FREEING) or _crc(memoryview(buf)[4:28]) != \
                    struct.unpack_from("<I", buf, 28)[0]:
                self._pages[p] = [_UNINIT, 0, _N, 0, True]  # corrupt: erased, then reused
            elif state == _FREEING:
                freeing = p
        act = [p for p, i in enumerate(self._pages) if i[0] == _ACTIVE]
        if freeing is not None:
            # ESP-IDF PageManager::load: a collection was cut; its half-made copy (an active
            # page newer than the FREEING one) is erased, and the copy made again below.
            for p in act:
                if self._pages[p][1] > self._pages[freeing][1]:
                    self._fl.erase(p * _PAGE, _PAGE)
                    self._pages[p] = [_UNINIT, 0, _N, 0, False]
            act = [p for p in act if self._pages[p][0] == _ACTIVE]
        for p in range(self._np):
            if self._pages[p][0] != _UNINIT:
                self._fl.read(p * _PAGE, buf)
                self._scan(p, buf, found)
        del buf
        self._resolve(found)
        if freeing is not None:
            free = [p for p, i in enumerate(self._pages) if i[0] == _UNINIT]
            self._activate(free[0])
            self._copy(freeing, free[0])
        else:
            for p in act:  # the newest active page takes the writes
                if self._act is None or self._pages[p][1] > self._pages[self._act][1]:
                    self._act = p
        return self

    def _scan(self, p, buf, found):
        info = self._pages[p]
        i, last = 0, 0
        bm = memoryview(buf)[32:64]
        while i < _N:
            st = (bm[i >> 2] >> ((i & 3) * 2)) & 3
            if st != 2:
                if st == 0:
                    info[3] += 1
                    last = i + 1
                i += 1
                continue
            e = memoryview(buf)[_E0 + 32 * i:_E0 + 32 * i + 32]
            span = e[2]
            ok = span and i + span <= _N and _entry_crc(e) == struct.unpack_from("<I", e, 4)[0]
            if not ok:
                span = 1
            value = None
            if ok and e[1] in (_SZ, _BLOB1, _DATA):
                n = struct.unpack_from("<H", e, 24)[0]
                value = bytes(buf[_E0 + 32 * (i + 1):_E0 + 32 * (i + 1) + n])
                ok = (n + 31) // 32 + 1 == span and _crc(value) == struct.unpack_from("<I", e, 28)[0]
            elif ok:
                value = bytes(e[24:32])
            if ok:
                key = bytes(e[8:24]).split(b"\x00", 1)[0].decode()
                found.append([(info[1] << 8) | i, [p, i, span, e[1], e[3]], e[0], key, value])
            else:  # a CRC that fails (a torn write): ESP-IDF erases the entry
                self._mark(p, i, span, True)
            i += span
            last = i
        if info[0] == _ACTIVE:
            # Entries programmed but never marked written (a cut between the two) are erased,
            # and the page's next free entry follows them.
            k = _PAGE - 1
            while k >= _E0 + 32 * last and buf[k] == 0xFF:
                k -= 1
            if k >= _E0 + 32 * last:
                n = (k - _E0) // 32 + 1 - last
                self._mark(p, last, n, True)
                last += n
            info[2] = last

    def _resolve(self, found):
        """Namespaces, then every key's newest whole version; the rest is erased, as ESP-IDF's
        init does with orphan or mismatched blob chunks and duplicates."""
        found.sort(key=lambda r: r[0])
        names = {}
        chunks = {}
        best = {}  # (ns, key) -> [(order, records, type, value)]
        for r in found:
            order, rec, nsi, key, value = r
            t = rec[3]
            if nsi == 0:
                if t != _U8 or key in self._ns:
                    self._erase([rec])
                    continue
                self._ns[key] = value[0]
                names[value[0]] = key
                self._recs[(0, key)] = [rec]
            elif t == _DATA:
                chunks[(nsi, key, rec[4])] = r
            elif t != _IDX:
                best.setdefault((nsi, key), []).append((order, [rec], t, value))
        for r in found:
            order, rec, nsi, key, value = r
            if rec[3] != _IDX or nsi == 0:
                continue
            size, count, start = struct.unpack_from("<IBB", value, 0)
            rec[4] = start  # an index's record keeps its chunk start
            parts = [chunks.get((nsi, key, start + c)) for c in range(count)]
            if None in parts or sum(len(c[4]) for c in parts) != size:
                self._erase([rec])  # an index whose chunks are incomplete
                continue
            for c in parts:
                c[0] = -1  # claimed
            best.setdefault((nsi, key), []).append(
                (order, [rec] + [c[1] for c in parts], _IDX, b"".join(c[4] for c in parts)))
        for c in chunks.values():
            if c[0] != -1:  # a chunk no whole index claims
                self._erase([c[1]])
        for (nsi, key), versions in best.items():
            versions.sort(key=lambda v: v[0])
            for v in versions[:-1]:
                self._erase(v[1])
            order, recs, t, value = versions[-1]
            ns = names.get(nsi)
            if ns is None:  # no namespace entry: unreachable, as on ESP-IDF
                continue
            if t == _I32:
                value = struct.unpack_from("<i", value, 0)[0]
            self.data.setdefault(ns, {})[key] = (t, value)
            self._recs[(nsi, key)] = recs

    # -- garbage collection and pages -----------------------------------------------------------
    def _activate(self, p):
        info = self._pages[p]
        if info[4]:
            self._fl.erase(p * _PAGE, _PAGE)
        seq = max([i[1] for i in self._pages if i[0] != _UNINIT] or [-1]) + 1
        h = bytearray(b"\xff" * 32)
        struct.pack_into("<IIB", h, 0, _ACTIVE, seq, _VERSION)
        struct.pack_into("<I", h, 28, _crc(memoryview(h)[4:28]))
        self._fl.program(p * _PAGE, h)
        self._pages[p] = [_ACTIVE, seq, 0, 0, False]
        self._act = p

    def _new_page(self):
        """Mark the active page full and activate another, collecting garbage (ESP-IDF
        PageManager::requestNewPage) when only the reserved free page is left."""
        a = self._act
        if a is not None and self._pages[a][0] == _ACTIVE:
            self._set_state(a, _FULL)
        self._act = None
        free = [p for p, i in enumerate(self._pages) if i[0] == _UNINIT]
        if len(free) >= 2:
            self._activate(free[0])
            return
        used = [p for p, i in enumerate(self._pages) if i[0] != _UNINIT and i[3]]
        if not free or not used:
            raise esp_error(emu_err.ESP_ERR_NVS_NOT_ENOUGH_SPACE)
        src = max(used, key=lambda p: self._pages[p][3])
        self._set_state(src, _FREEING)
        self._activate(free[0])
        self._copy(src, free[0])

    def _copy(self, src, dst):
        """Copy src's written entries to the (new, active) page dst, then erase src."""
        bm = bytes(self._bitmap(src))
        moved = {}
        e = bytearray(32)
        i = 0
        while i < _N:
            if (bm[i >> 2] >> ((i & 3) * 2)) & 3 != 2:
                i += 1
                continue
            self._fl.read(src * _PAGE + _E0 + 32 * i, e)
            span = e[2] or 1
            raw = bytearray(32 * span)
            self._fl.read(src * _PAGE + _E0 + 32 * i, raw)
            n = self._pages[dst][2]
            self._fl.program(dst * _PAGE + _E0 + 32 * n, raw)
            self._mark(dst, n, span, False)
            self._pages[dst][2] = n + span
            moved[i] = n
            i += span
        for recs in self._recs.values():
            for r in recs:
                if r[0] == src and r[1] in moved:
                    r[0], r[1] = dst, moved[r[1]]
        self._fl.erase(src * _PAGE, _PAGE)
        self._pages[src] = [_UNINIT, 0, 0, 0, False]

    # -- writing ---------------------------------------------------------------------------------
    def _write(self, nsi, key, t, chunk, data8, payload=None):
        """One item (header entry plus payload entries) on the active page: programmed in one
        write, then marked written in one. Returns its record."""
        p = self._act
        span = 1 + (0 if payload is None else (len(payload) + 31) // 32)
        if p is None or self._pages[p][2] + span > _N:
            self._new_page()
            p = self._act
        e = bytearray(b"\xff" * (32 * span))
        e[0], e[1], e[2], e[3] = nsi, t, span, chunk
        kb = key.encode()
        e[8:24] = kb + bytes(16 - len(kb))
        e[24:32] = data8
        struct.pack_into("<I", e, 4, _entry_crc(e))
        if payload:
            e[32:32 + len(payload)] = payload
        n = self._pages[p][2]
        self._fl.program(p * _PAGE + _E0 + 32 * n, e)
        self._mark(p, n, span, False)
        self._pages[p][2] = n + span
        return [p, n, span, t, chunk]

    def _write_blob(self, nsi, key, value, old, recs):
        """ESP-IDF's writeMultiPageBlob: chunks that fill each page's tail, the index last; the
        chunk indices start at 0x00 or 0x80, whichever the old version does not use."""
        start = 0x80 if [r for r in old if r[3] == _IDX and r[4] == 0] else 0
        n = left = len(value)
        count = 0
        while True:
            if self._act is None:
                self._new_page()
            nxt = self._pages[self._act][2]
            tail = (_N - nxt - 1) * 32 if nxt < _N else 0
            if not count and (tail < n or (tail == 0 and n == 0)) and tail < _CHUNK_MAX // 10:
                self._new_page()  # too little room for a first chunk
                continue
            c = min(left, tail)
            part = value[n - left:n - left + c]
            recs.append(self._write(nsi, key, _DATA, start + count,
                                    struct.pack("<HHI", c, 0xFFFF, _crc(part)), part))
            count += 1
            left -= c
            if left or tail - c < 32:
                self._new_page()
            if not left:
                break
        recs.append(self._write(nsi, key, _IDX, _ANY,
                                struct.pack("<IBBH", n, count, start, 0xFFFF)))
        recs[-1][4] = start  # an index's record keeps its chunk start

    def _erase(self, recs):
        for r in recs:
            self._mark(r[0], r[1], r[2], True)

    def namespace(self, ns):
        """The namespace's index, its U8 entry written now if new (nvs_open READWRITE does)."""
        nsi = self._ns.get(ns)
        if nsi is None:
            used = set(self._ns.values())
            nsi = 1
            while nsi in used:
                nsi += 1
            if nsi > _MAX_NS:
                raise esp_error(emu_err.ESP_ERR_NVS_NOT_ENOUGH_SPACE)
            if not self._fits(self.data, 1):
                raise esp_error(emu_err.ESP_ERR_NVS_NOT_ENOUGH_SPACE)
            rec = self._write(0, ns, _U8, _ANY, bytes([nsi]) + _FF8[:7])
            self._ns[ns] = nsi
            self._recs[(0, ns)] = [rec]
        return nsi

    def _fits(self, data, extra=0):
        """Would `data` (plus `extra` entries) fit the partition laid out afresh, with one page
        kept free for garbage collection as ESP-IDF keeps it?"""
        nxt = len(self._ns) + extra  # namespaces and one-entry items first
        blobs = []
        for entries in data.values():
            for t, value in entries.values():
                if t == _IDX:
                    blobs.append(len(value))
                else:
                    nxt += 1 if t == _I32 else 1 + (len(value) + 31) // 32
        pages, nxt = 1 + nxt // _N, nxt % _N
        for n in blobs:
            plan, nxt = _spans(n, nxt)
            pages += sum(1 for s in plan if s[0])
        return pages - (nxt == 0) <= self._np - 1

    # -- the working copy ------------------------------------------------------------------------
    def put(self, ns, key, t, value):
        """Set ns/key; raises NOT_ENOUGH_SPACE (nothing changes) when it would not fit."""
        entries = self.data.setdefault(ns, {})
        old = entries.get(key)
        entries[key] = (t, value)
        if not self._fits(self.data):
            if old is None:
                del entries[key]
            else:
                entries[key] = old
            raise esp_error(emu_err.ESP_ERR_NVS_NOT_ENOUGH_SPACE)
        self._touch(ns, key)

    def remove(self, ns, key):
        entries = self.data.get(ns) or {}
        if entries.pop(key, None) is None:
            raise esp_error(emu_err.ESP_ERR_NVS_NOT_FOUND)
        self._touch(ns, key)

    def _touch(self, ns, key):
        if (ns, key) not in self._dirty:
            self._dirty.append((ns, key))

    def commit(self):
        """Write each changed key (new entries first, then the old ones erased), in the order
        they were changed; a key erased since the last commit has its entries erased."""
        while self._dirty:
            ns, key = self._dirty[0]
            nsi = self.namespace(ns)
            old = self._recs.get((nsi, key)) or []
            item = (self.data.get(ns) or {}).get(key)
            if item is not None:
                recs = []
                self._recs[(nsi, "")] = recs  # in flight: garbage collection moves it too
                t, value = item
                try:
                    if t == _I32:
                        recs.append(self._write(nsi, key, _I32, _ANY,
                                                struct.pack("<i", value) + _FF8[:4]))
                    else:
                        self._write_blob(nsi, key, value, old, recs)
                except OSError:
                    self._erase(recs)  # no room: what was written of the new version goes
                    raise
                finally:
                    del self._recs[(nsi, "")]
                self._recs[(nsi, key)] = recs
            elif (nsi, key) in self._recs:
                del self._recs[(nsi, key)]
            self._erase(old)
            self._dirty.pop(0)


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
        _store.namespace(self._ns)

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
        _store.put(self._ns, _name(key), _I32, value)

    def get_i32(self, key):
        return self._get(key, _I32)

    def set_blob(self, key, value):
        key = _name(key)
        if isinstance(value, int):
            raise TypeError("object with buffer protocol required")
        raw = value.encode() if isinstance(value, str) else bytes(value)
        if len(raw) > _store.max_blob:
            # Can never fit, even in an empty partition.
            raise esp_error(emu_err.ESP_ERR_NVS_VALUE_TOO_LONG)
        _store.put(self._ns, key, _IDX, raw)

    def get_blob(self, key, buf):
        """Copy the blob into `buf` (writable buffer); returns its length."""
        raw = self._get(key, _IDX)
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
