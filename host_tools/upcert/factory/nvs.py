"""NVS partition images: made with Espressif's generator (PyPI esp-idf-nvs-partition-gen), and
read by a decoder written from ESP-IDF's "Non-Volatile Storage Library" documentation
("Internals": pages, entry state bitmap, entries, namespaces, version-2 blobs), to check what a
board wrote and to show what an image holds.

Only the entries a reader should see count: written (not erased) entries with a correct CRC, the
newest whole version of each key. Nothing here prints a value: callers decide (a key is secret).
"""

import io
import struct
import zlib

from upcert.errors import UpcertError

PAGE = 4096
ENTRIES = 126
VERSION2 = 0xFE
STATES = {0xFFFFFFFF: "empty", 0xFFFFFFFE: "active", 0xFFFFFFFC: "full",
          0xFFFFFFF8: "freeing"}
TYPES = {0x01: "u8", 0x11: "i8", 0x02: "u16", 0x12: "i16", 0x04: "u32", 0x14: "i32",
         0x08: "u64", 0x18: "i64", 0x21: "string", 0x41: "blob_v1", 0x42: "blob_data",
         0x48: "blob_index"}
_PRIM = {0x01: "<B", 0x11: "<b", 0x02: "<H", 0x12: "<h", 0x04: "<I", 0x14: "<i", 0x08: "<Q",
         0x18: "<q"}


def _crc(data):
    return zlib.crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF


def build(namespace, items, size):
    """An NVS partition image of `size` bytes holding `items` [(key, value)] in `namespace`:
    bytes become a blob (version 2: BLOB_DATA chunks + BLOB_IDX), int an i32, str a string.
    Made by Espressif's generator through its documented Python wrappers."""
    from esp_idf_nvs_partition_gen import nvs_partition_gen as gen

    out = io.BytesIO()
    try:
        # as its CLI does (check_size): one page is kept back for garbage collection
        nvs = gen.nvs_open(out, size - PAGE, gen.Page.VERSION2)
        gen.write_entry(nvs, namespace, "namespace", "", "")
        for key, value in items:
            if isinstance(value, bytes):
                gen.write_entry(nvs, key, "data", "binary", value)
            elif isinstance(value, bool) or not isinstance(value, (int, str)):
                raise UpcertError(f"NVS item {key!r}: {type(value).__name__} is not bytes, "
                                  "int or str")
            elif isinstance(value, int):
                gen.write_entry(nvs, key, "data", "i32", str(value))
            else:
                gen.write_entry(nvs, key, "data", "string", value)
        gen.nvs_close(nvs)
    except (gen.InsufficientSizeError, gen.InputError, gen.PageFullError) as e:
        raise UpcertError(f"NVS image of {size} bytes: {e}; make the nvs partition bigger or "
                          "the values smaller") from None
    image = out.getvalue()
    if len(image) != size:
        raise UpcertError(f"the NVS generator made {len(image)} bytes, not {size}")
    return image


def _entries(image):
    """Every page's written entries with a good CRC, oldest first: (order, page, index, ns,
    type, span, chunk, key, data8, payload)."""
    if len(image) % PAGE or len(image) < 3 * PAGE:
        raise UpcertError(f"an NVS partition is a multiple of {PAGE} bytes, at least 3 pages; "
                          f"this one has {len(image)}")
    out = []
    for p in range(len(image) // PAGE):
        page = image[p * PAGE:(p + 1) * PAGE]
        state, seq = struct.unpack_from("<II", page, 0)
        if state not in (0xFFFFFFFE, 0xFFFFFFFC, 0xFFFFFFF8):
            continue
        if _crc(page[4:28]) != struct.unpack_from("<I", page, 28)[0]:
            continue
        bitmap = page[32:64]
        i = 0
        while i < ENTRIES:
            if (bitmap[i // 4] >> (2 * (i % 4))) & 3 != 2:
                i += 1
                continue
            e = page[64 + 32 * i:96 + 32 * i]
            ns, typ, span, chunk = e[0], e[1], e[2], e[3]
            if not span or i + span > ENTRIES or \
                    _crc(e[0:4] + e[8:32]) != struct.unpack_from("<I", e, 4)[0]:
                i += 1
                continue
            payload = None
            if typ in (0x21, 0x41, 0x42):
                n = struct.unpack_from("<H", e, 24)[0]
                payload = page[96 + 32 * i:96 + 32 * i + n]
                if (n + 31) // 32 + 1 != span or _crc(payload) != struct.unpack_from(
                        "<I", e, 28)[0]:
                    i += span
                    continue
            key = e[8:24].split(b"\0", 1)[0].decode("utf-8", "replace")
            out.append(((seq, i), p, i, ns, typ, span, chunk, key, e[24:32], payload))
            i += span
    return sorted(out)


def read(image):
    """{namespace: {key: value}} as ESP-IDF would read the partition: int for integer types,
    bytes for blobs, str for strings. The newest whole version of each key wins."""
    found = _entries(image)
    names = {}
    for e in found:
        if e[3] == 0 and e[4] == 0x01 and e[7] not in names.values():
            names[e[8][0]] = e[7]
    chunks = {(e[3], e[7], e[6]): e for e in found if e[4] == 0x42}
    newest = {}
    for e in found:
        ns, typ, key = e[3], e[4], e[7]
        if ns == 0 or typ == 0x42:
            continue
        if typ == 0x48:
            size, count, start = struct.unpack_from("<IBB", e[8], 0)
            parts = [chunks.get((ns, key, start + c)) for c in range(count)]
            if None in parts:
                continue
            value = b"".join(c[9] for c in parts)
            if len(value) != size:
                continue
        elif typ in _PRIM:
            value = struct.unpack_from(_PRIM[typ], e[8], 0)[0]
        elif typ == 0x21:
            value = e[9].rstrip(b"\0").decode("utf-8", "replace")
        else:
            value = e[9]
        newest[(ns, key)] = value  # found is oldest first: the last one wins
    out = {}
    for (ns, key), value in newest.items():
        if ns in names:
            out.setdefault(names[ns], {})[key] = value
    return out


def summary(image):
    """Pages (state, seq, entries written/erased/empty) of an NVS partition, for `image show`."""
    rows = []
    for p in range(len(image) // PAGE):
        page = image[p * PAGE:(p + 1) * PAGE]
        state, seq = struct.unpack_from("<II", page, 0)
        counts = [0, 0, 0, 0]
        for i in range(ENTRIES):
            counts[(page[32 + i // 4] >> (2 * (i % 4))) & 3] += 1
        rows.append({"page": p, "state": STATES.get(state, f"{state:#x}"),
                     "seq": seq if state != 0xFFFFFFFF else None, "written": counts[2],
                     "erased": counts[0], "empty": counts[3]})
    return rows
