# Device tests for the credential stores: FsStore on a temp dir (including power-cut recovery),
# load_roots, and NvsStore over the esp32.NVS stand-in in fakes/esp32.py.
import os

import esp32
from certdata import EC_DER, RSA_DER
from checks import eq, raises, tmpdir
from upcert.errors import StoreError
from upcert.store import load_roots
from upcert.store_fs import FsStore
from upcert.store_nvs import NvsStore

_KEY = b"\x30\x81\x87" + bytes(range(135))  # stands in for PKCS#8 DER; the store does not parse it


def _put(path, data):
    with open(path, "wb") as f:
        f.write(data)


def test_fs_round_trip():
    root = tmpdir("fs") + "/upcert.d"
    s = FsStore(root)
    eq(s.kind, "fs", "kind")
    s.write(EC_DER, _KEY)  # creates root
    eq(s.certificate(), EC_DER, "cert")
    eq(s.private_key(), _KEY, "key")
    eq(s.signer(), None, "signer")
    eq(s.describe(), {"kind": "fs", "location": root, "slot": "A", "seq": 0, "staged": False},
       "describe: the single-slot layout is slot A")
    s.write(RSA_DER, _KEY[:50])
    eq(s.certificate(), RSA_DER, "cert replaced")
    eq(s.private_key(), _KEY[:50], "key replaced")
    eq(sorted(os.listdir(root)), ["cert.der", "key.der"], "no tmp files left")


def test_fs_missing_and_empty():
    root = tmpdir("fsmissing")
    s = FsStore(root)
    raises(
        StoreError,
        s.certificate,
        contains=("device certificate " + root + "/cert.der missing", "upcert provision"),
    )
    raises(StoreError, s.private_key, contains=("private key " + root + "/key.der missing",))
    _put(root + "/cert.der", b"")
    raises(StoreError, s.certificate, contains="is empty")
    raises(StoreError, s.write, b"", _KEY, contains="empty")


def test_fs_power_cut_after_cert_rename_rolls_forward():
    root = tmpdir("cut1")
    s = FsStore(root)
    s.write(EC_DER, b"old key")
    # State after a cut between the two renames: new cert in place, complete key.der.tmp left.
    _put(root + "/cert.der", RSA_DER)
    _put(root + "/key.der.tmp", b"new key")
    eq(s.private_key(), b"new key", "key rolled forward")
    eq(s.certificate(), RSA_DER, "new cert")
    eq(sorted(os.listdir(root)), ["cert.der", "key.der"], "tmp consumed")


def test_fs_power_cut_while_writing_keeps_old_pair():
    for leftovers in (("cert.der.tmp",), ("cert.der.tmp", "key.der.tmp")):
        root = tmpdir("cut" + str(len(leftovers) + 1))
        s = FsStore(root)
        s.write(EC_DER, b"old key")
        for name in leftovers:
            _put(root + "/" + name, b"partial")
        eq(s.certificate(), EC_DER, "old cert kept")
        eq(s.private_key(), b"old key", "old key kept")
        eq(sorted(os.listdir(root)), ["cert.der", "key.der"], "partial tmp removed")


def test_load_roots():
    d = tmpdir("roots")
    _put(d + "/roots.der", EC_DER + RSA_DER)
    eq(load_roots(d + "/roots.der"), [EC_DER, RSA_DER], "two roots")
    raises(
        StoreError,
        load_roots,
        d + "/none.der",
        contains=("trust anchors " + d + "/none.der missing", "upcert provision"),
    )
    _put(d + "/empty.der", b"")
    raises(StoreError, load_roots, d + "/empty.der", contains="is empty")
    for bad in (EC_DER + RSA_DER[:-10], b"\x02\x01\x00", EC_DER + b"\x30\x03\x02\x01\x00"):
        _put(d + "/bad.der", bad)
        raises(
            StoreError,
            load_roots,
            d + "/bad.der",
            contains=("trust anchors " + d + "/bad.der corrupt", "upcert provision"),
        )


def test_nvs_missing_key():
    esp32.reset()
    s = NvsStore(esp32.NVS("upcert"))
    eq(s.kind, "nvs", "kind")
    raises(
        StoreError,
        s.certificate,
        contains="nvs namespace 'upcert' has no 'cert' blob (device certificate): run upcert provision --store nvs",
    )
    raises(StoreError, s.private_key, contains="no 'key' blob")


def test_nvs_round_trip_commits_once():
    esp32.reset()
    nvs = esp32.NVS("upcert")
    s = NvsStore(nvs)
    s.write(EC_DER, _KEY)
    eq([c[0] for c in nvs.calls if c[0] != "get_blob"], ["set_blob", "set_blob", "commit"], "calls")
    s2 = NvsStore(esp32.NVS("upcert"))  # a fresh handle (as after a reset) sees committed data
    eq(s2.certificate(), EC_DER, "cert")
    eq(s2.private_key(), _KEY, "key")
    eq(s2.signer(), None, "signer")
    eq(s2.describe(), {"kind": "nvs", "location": "nvs:upcert", "slot": "A", "seq": 0,
                      "staged": False}, "describe")


def test_nvs_grows_buffer_for_big_blobs():
    esp32.reset()
    nvs = esp32.NVS("upcert")
    big = bytes(range(256)) * 20  # 5120 bytes
    nvs.set_blob("cert", big)
    nvs.commit()
    nvs.calls = []
    eq(NvsStore(nvs).certificate(), big, "big blob")
    eq([c[2] for c in nvs.calls if c[1] == "cert"], [2048, 4096, 8192], "buffer sizes tried")
    raises(StoreError, NvsStore(_HugeNvs()).private_key, contains="reading 'key' failed")
    nvs.set_blob("key", b"")
    raises(StoreError, NvsStore(nvs).private_key, contains="'key' blob is empty")


class _HugeNvs:
    # No journal, and a 'key' blob larger than NvsStore reads (16 KiB): every buffer is too small.
    def get_blob(self, key, buf):
        if key == "key":
            raise OSError(-4364, "ESP_ERR_NVS_INVALID_LENGTH")
        raise OSError(-4354, "ESP_ERR_NVS_NOT_FOUND")


class _BrokenNvs:
    def get_blob(self, key, buf):
        raise OSError(-4357, "ESP_ERR_NVS_NOT_ENOUGH_SPACE")

    def set_blob(self, key, buf):
        raise OSError(-4357, "ESP_ERR_NVS_NOT_ENOUGH_SPACE")


def test_nvs_other_errors_are_store_errors():
    s = NvsStore(_BrokenNvs(), "creds")
    raises(StoreError, s.certificate, contains="nvs namespace 'creds': reading 'slots' failed")
    raises(
        StoreError, s.write, EC_DER, _KEY, contains=("nvs namespace 'creds': write failed", "full")
    )
    raises(StoreError, s.write, EC_DER, b"", contains="empty")


class _RamBlocks:
    # Block device for vfs.VfsLfs2 (readblocks/writeblocks/ioctl 4,5,6), as the ESP32 flash offers.
    def __init__(self, count, size=512):
        self.data = bytearray(count * size)
        self.count, self.size = count, size

    def readblocks(self, n, buf, off=0):
        a = n * self.size + off
        buf[:] = self.data[a : a + len(buf)]

    def writeblocks(self, n, buf, off=0):
        a = n * self.size + off
        self.data[a : a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return self.count
        if op == 5:
            return self.size
        if op == 6:
            return 0


def test_fs_on_littlefs():
    # The board's file system: rename over an existing file must replace it (littlefs does).
    import vfs

    dev = _RamBlocks(64)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/upcert_lfs_test")
    try:
        s = FsStore("/upcert_lfs_test/upcert")
        s.write(EC_DER, _KEY)
        s.write(RSA_DER, b"k2")
        eq(s.certificate(), RSA_DER, "cert on littlefs")
        eq(s.private_key(), b"k2", "key on littlefs")
        eq(sorted(os.listdir("/upcert_lfs_test/upcert")), ["cert.der", "key.der"], "files")
    finally:
        vfs.umount("/upcert_lfs_test")


def test_store_modules_import_downward_only_and_the_journal_is_not_resident():
    # store.py (the interface) loads no store module, the journal (store_journal.py) only the
    # interface; a store reading its journal at boot keeps the decoded state, not the module.
    import sys

    root = tmpdir("imports") + "/upcert.d"
    s = FsStore(root)
    s.write(EC_DER, _KEY)
    s.stage(RSA_DER, _KEY)
    s.commit()
    code = (
        "import sys\n"
        "def mods():\n    return sorted(m for m in sys.modules if m.startswith('upcert.store'))\n"
        "import upcert.store\na = mods()\nimport upcert.store_journal\nb = mods()\n"
        "del sys.modules['upcert.store_journal']\nfrom upcert.store_fs import FsStore\n"
        "s = FsStore(%r)\nn = len(s.certificate())\nprint(repr((a, b, mods(), n, s._st[0])))\n"
        % root
    )
    path, out = root + "/../probe.py", root + "/../out.txt"
    _put(path, code.encode())
    exe = sys.executable or "micropython"
    eq(os.system("%s %s > %s" % (exe, path, out)), 0, "probe ran")
    with open(out) as f:
        got = f.read().strip()
    want = (
        ["upcert.store"],
        ["upcert.store", "upcert.store_journal"],
        ["upcert.store", "upcert.store_fs", "upcert.store_slots"],
        len(RSA_DER),
        1,
    )
    eq(got, repr(want), "modules loaded; slot B read through the journal")
