# Device tests of the emulated board's esp32.NVS stand-in (boards/unix/emu/emu_nvs.py).
# Run by tests/device/runner.py under the unix port; files go to $UPCERT_TEST_TMP.
import os
import sys

sys.path.insert(0, ("/".join(__file__.split("/")[:-3]) or ".") + "/boards/unix/emu")
import emu_nvs  # noqa: E402
from emu_flash import open_image  # noqa: E402

_N = 0


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


def test_torn_commit_keeps_the_previous_one():
    path, f = _fresh()
    n = emu_nvs.NVS("upcert")
    n.set_i32("v", 1)
    n.commit()
    n.set_i32("v", 2)
    n.commit()
    n.set_i32("v", 3)
    n.commit()  # the newest copy is now in slot A (offset 0), the one before in slot B
    f.close()
    f = _reload(path)
    if emu_nvs.NVS("upcert").get_i32("v") != 3:
        raise AssertionError("the newest of two valid copies must win")
    f.seek(20)
    f.write(b"\x00\x00")  # a power cut in the middle of writing it
    f.close()
    f = _reload(path)
    if emu_nvs.NVS("upcert").get_i32("v") != 2:
        raise AssertionError("the previous commit must win over a torn one")
    f.close()


def test_capacity_limit():
    _fresh()
    n = emu_nvs.NVS("big")
    if _errno(n.set_blob, "huge", bytes(20000)) != -4366:
        raise AssertionError("ESP_ERR_NVS_VALUE_TOO_LONG")
    i = 0
    while True:
        try:
            n.set_blob("k%d" % i, bytes(1000))
        except OSError as e:
            if e.args[0] != -4357:
                raise
            break
        i += 1
    if not 10 <= i <= 12:
        raise AssertionError("12 KiB per copy expected, stored %d KB" % i)
    n.commit()  # what fits can be committed
    n.set_i32("small", 7)  # the failed set changed nothing, space for this remains


def test_handles_share_the_working_copy_and_namespaces_are_separate():
    _fresh()
    a1, a2, b = emu_nvs.NVS("a"), emu_nvs.NVS("a"), emu_nvs.NVS("b")
    a1.set_i32("x", 10)
    if a2.get_i32("x") != 10:
        raise AssertionError("handles of one namespace must see the same values")
    if _errno(b.get_i32, "x") != -4354:
        raise AssertionError("namespaces must be separate")
