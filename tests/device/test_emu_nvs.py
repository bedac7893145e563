# Device tests of the emulated board's esp32.NVS stand-in (boards/unix/emu/emu_nvs.py).
# Run by tests/device/runner.py under the unix port; files go to $UPCERT_TEST_TMP.
import os
import sys

sys.path.insert(0, ("/".join(__file__.split("/")[:-3]) or ".") + "/boards/unix/emu")
import emu_cut  # noqa: E402
import emu_nvs  # noqa: E402
from emu_flash import open_image  # noqa: E402

_N = 0
_real_wrote = emu_cut.wrote


def _fresh(size=24576):
    """A new, erased nvs.bin and a store on it."""
    global _N
    _N += 1
    path = "%s/nvs%d.bin" % (os.getenv("UPCERT_TEST_TMP") or "/tmp", _N)
    try:
        os.remove(path)
    except OSError:
        pass
    f = open_image(path, size)
    store = emu_nvs.NvsStore(f, size).load()
    emu_nvs.install(store)
    return path, f


def _reload(path, size=24576):
    f = open(path, "r+b")
    store = emu_nvs.NvsStore(f, size).load()
    emu_nvs.install(store)
    return f


def _errno(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return e.args[0]
    raise AssertionError("no OSError from %r" % (fn,))


def test_i32_and_blob_roundtrip():
    _fresh()
    n = emu_nvs.NVS("upcert")
    n.set_i32("count", -5)
    n.set_blob("cert", b"\x30\x82\x01\x00der")
    n.set_blob("text", "a string")
    buf = bytearray(16)
    if n.get_i32("count") != -5:
        raise AssertionError("i32")
    if n.get_blob("cert", buf) != 7 or bytes(buf[:7]) != b"\x30\x82\x01\x00der":
        raise AssertionError("blob")
    if bytes(buf[:n.get_blob("text", buf)]) != b"a string":
        raise AssertionError("str blob")


def test_esp_idf_error_codes():
    _fresh()
    n = emu_nvs.NVS("ns")
    n.set_blob("b", b"123456")
    if _errno(n.get_i32, "missing") != -4354:
        raise AssertionError("ESP_ERR_NVS_NOT_FOUND")
    if _errno(n.get_blob, "b", bytearray(5)) != -4364:
        raise AssertionError("ESP_ERR_NVS_INVALID_LENGTH")
    if _errno(n.set_i32, "sixteen_chars_xx", 1) != -4361:
        raise AssertionError("ESP_ERR_NVS_KEY_TOO_LONG")
    if _errno(emu_nvs.NVS, "") != -4358:
        raise AssertionError("ESP_ERR_NVS_INVALID_NAME")
    if _errno(n.get_i32, "b") != -4354:
        raise AssertionError("a blob read as i32 must be not found")
    try:
        n.get_i32("b")
    except OSError as e:
        args = e.args
    if args[1] != "ESP_ERR_NVS_NOT_FOUND":
        raise AssertionError(args)
    try:
        n.set_i32("big", 1 << 31)
        raise AssertionError("no OverflowError")
    except OverflowError:
        pass
    n.erase_key("b")
    if _errno(n.erase_key, "b") != -4354:
        raise AssertionError("erase of a missing key")


def test_commit_persists_and_uncommitted_is_lost():
    path, f = _fresh()
    n = emu_nvs.NVS("upcert")
    n.set_blob("cert", b"one")
    n.commit()
    n.set_blob("key", b"two")  # never committed: lost with the interpreter
    f.close()
    f = _reload(path)
    n = emu_nvs.NVS("upcert")
    buf = bytearray(8)
    if bytes(buf[:n.get_blob("cert", buf)]) != b"one":
        raise AssertionError("committed value lost")
    if _errno(n.get_blob, "key", buf) != -4354:
        raise AssertionError("uncommitted value survived")
    f.close()


class _Cut(Exception):
    pass


def _cut_after(n):
    """Cut the power right after the nth flash write from now (emu_cut counts them)."""
    left = [n]

    def wrote():
        left[0] -= 1
        if left[0] == 0:
            raise _Cut()

    emu_cut.wrote = wrote


def _values(path):
    f = _reload(path)
    n = emu_nvs.NVS("upcert")
    out = []
    for i in range(8):
        if bytes(_blob(n, "keep%d" % i)) != bytes([i]) * 900:
            raise AssertionError("keep%d, which no rotation touched, is damaged" % i)
    for key in ("cert", "key", "v"):
        try:
            out.append(n.get_i32(key) if key == "v" else bytes(_blob(n, key)))
        except OSError as e:
            out.append(e.args[0])
    return f, out


def _blob(n, key):
    buf = bytearray(8192)
    return buf[:n.get_blob(key, buf)]


def _rotation(old, new):
    n = emu_nvs.NVS("upcert")
    n.set_blob("cert", old[0])
    n.set_blob("key", old[1])
    n.set_i32("v", old[2])
    n.commit()
    n.set_blob("cert", new[0])
    n.set_blob("key", new[1])
    n.set_i32("v", new[2])
    n.commit()


def test_cut_after_every_write_leaves_each_key_old_or_new():
    # ESP-IDF writes a key's new entries before it erases the old ones, and its init drops a
    # half-written entry or blob: a cut anywhere leaves every key whole, old or new, and the
    # partition still takes writes. The rotation cut is one that collects garbage.
    old = (b"C" * 700, b"K" * 140, 1)
    new = (b"c" * 900, b"k" * 150, 2)
    path, f = _fresh()
    copies = [0]
    real_copy = emu_nvs.NvsStore._copy

    def copy(self, src, dst):  # counts collections that move a live entry
        copies[0] += any(r[0] == src for recs in self._recs.values() for r in recs)
        real_copy(self, src, dst)

    emu_nvs.NvsStore._copy = copy
    for i in range(8):  # never changed, on every page between rotations: moved by collections
        emu_nvs.NVS("upcert").set_blob("keep%d" % i, bytes([i]) * 900)
        emu_nvs.NVS("upcert").commit()
        _rotation(old, new)
    total = [0]

    def count():
        total[0] += 1

    for _ in range(40):  # find a rotation during which garbage is collected
        f.close()
        snap = open(path, "rb").read()
        f = _reload(path)
        total[0] = copies[0] = 0
        emu_cut.wrote = count
        _rotation(old, new)
        emu_cut.wrote = _real_wrote
        if copies[0]:
            break
    emu_nvs.NvsStore._copy = real_copy
    f.close()
    if not copies[0]:
        raise AssertionError("40 rotations never moved a live entry")
    if total[0] < 10:
        raise AssertionError("a rotation should take many flash writes, not %d" % total[0])
    seen = set()
    for cut in range(1, total[0] + 1):
        with open(path, "wb") as g:
            g.write(snap)
        f = _reload(path)
        _cut_after(cut)
        try:
            _rotation(old, new)
            raise AssertionError("no cut at write %d of %d" % (cut, total[0]))
        except _Cut:
            pass
        finally:
            emu_cut.wrote = _real_wrote
        f.close()
        f, got = _values(path)
        for i, key in enumerate(("cert", "key", "v")):
            if got[i] not in (old[i], new[i]):
                raise AssertionError("cut at write %d: %s is %r" % (cut, key, got[i]))
        seen.add(tuple(got))
        _rotation(old, new)  # the partition takes writes again
        f.close()
        f, got = _values(path)
        if got != list(new):
            raise AssertionError("cut at write %d: a rotation after it failed" % cut)
        f.close()
    print("  %d cut points (a collection among them), %d distinct outcomes" % (total[0], len(seen)))
    if len(seen) < 3:
        raise AssertionError("cuts should leave old, new and mixed states: %r" % seen)


def test_capacity_limit():
    path, f = _fresh()
    n = emu_nvs.NVS("big")
    if _errno(n.set_blob, "huge", bytes(20000)) != -4366:
        raise AssertionError("ESP_ERR_NVS_VALUE_TOO_LONG (the limit: 97.6% of 24 KiB - 4000)")
    i = 0
    while True:
        try:
            n.set_blob("k%d" % i, bytes(1000))
        except OSError as e:
            if e.args[0] != -4357:
                raise
            break
        i += 1
    # 1000 bytes take 34 entries (header, 32 data entries, index), one more header where a
    # blob is split over two pages; 5 of the 6 pages take data (one stays free for garbage
    # collection): 5 x 126 entries less the namespace's, 17 blobs.
    if i != 17:
        raise AssertionError("17 blobs of 1000 bytes should fit a 24 KiB partition, not %d" % i)
    n.commit()  # what fits can be committed
    f.close()
    f = _reload(path)
    n = emu_nvs.NVS("big")
    if bytes(_blob(n, "k16")) != bytes(1000):
        raise AssertionError("the last blob must read back after a reload")
    n.set_i32("small", 7)  # the failed set changed nothing, space for this remains
    n.commit()
    f.close()


def test_handles_share_the_working_copy_and_namespaces_are_separate():
    _fresh()
    a1, a2, b = emu_nvs.NVS("a"), emu_nvs.NVS("a"), emu_nvs.NVS("b")
    a1.set_i32("x", 10)
    if a2.get_i32("x") != 10:
        raise AssertionError("handles of one namespace must see the same values")
    if _errno(b.get_i32, "x") != -4354:
        raise AssertionError("namespaces must be separate")
