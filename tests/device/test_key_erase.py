# Device tests: a discarded staged key leaves no copy of its bytes on the flash where the store
# can erase them: the partition store erases the record's sectors (NOR erase). Runs the real
# store over the emulated board's own esp32.Partition stand-in on an image file, and scans it.
# littlefs (store fs) is copy-on-write and ESP-IDF NVS log-structured: neither can erase a value
# in place (README, "Keys on the flash"); a failed rotation's certificate is retired instead.
import os
import sys

sys.path.insert(0, ("/".join(__file__.split("/")[:-3]) or ".") + "/boards/unix/emu")
import emu_partition  # noqa: E402
from certdata import EC_DER  # noqa: E402
from checks import eq, tmpdir, true  # noqa: E402
from emu_flash import FlashFile, open_image  # noqa: E402
from upcert.store_part import PartitionStore  # noqa: E402

OLD_KEY = b"\x30\x45" + b"old-key-material-" * 4
NEW_KEY = b"\x30\x45" + b"NEW-staged-key!!-" * 4


def _scan(path):
    with open(path, "rb") as f:
        return f.read()


def test_partition_discard_leaves_no_copy_of_the_staged_key():
    path = tmpdir("part-erase") + "/part.bin"
    flash = FlashFile(open_image(path, 4 * 4096), 4 * 4096)
    emu_partition.install([("upcert", 1, 0x40, 0x3E0000, 4 * 4096, flash)])
    p = emu_partition.Partition.find(emu_partition.Partition.TYPE_DATA, label="upcert")[0]
    s = PartitionStore(p)
    s.write(EC_DER, OLD_KEY)
    s.stage(EC_DER, NEW_KEY)
    true(NEW_KEY[2:20] in _scan(path), "staged key written")
    s.discard()
    true(NEW_KEY[2:20] not in _scan(path), "no copy of the discarded key in the partition")
    true(OLD_KEY[2:20] in _scan(path), "the active key is still there")


def test_fs_stage_on_a_full_flash_leaves_no_partial_slot_file():
    # A write that fails half way (here: key-b.der cannot be created) leaves neither a
    # cert-b.der nor a *.tmp behind, and the active identity stands.
    from upcert.errors import StoreError
    from upcert.store_fs import FsStore

    root = tmpdir("fs-full")
    s = FsStore(root)
    s.write(EC_DER, OLD_KEY)
    os.mkdir(root + "/key-b.der")  # open(..., "wb") fails on it, as on a full flash
    try:
        s.stage(EC_DER, NEW_KEY)
    except StoreError as e:
        true("writing slot B" in str(e), str(e))
    else:
        raise AssertionError("stage did not fail")
    left = sorted(n for n in os.listdir(root) if n != "key-b.der")
    eq(left, ["cert.der", "key.der"], "no partial slot file or tmp left")
    eq((s.certificate(), s.private_key()), (EC_DER, OLD_KEY), "active identity kept")
