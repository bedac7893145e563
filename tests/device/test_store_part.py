# Device tests for store_part.py: PartitionStore over a fake NOR partition (erase to 0xFF, program
# clears bits) with torn writes injected at every flash write, SecureCertStore over TLV images
# built from the documented esp_secure_cert layout, and board.store() for both kinds.
import os
import struct
import sys
from binascii import b2a_base64, crc32

import esp32
from certdata import EC_DER
from checks import eq, raises, true
from upcert.errors import StoreError
from upcert.store_part import PartitionStore, SecureCertStore

sys.path.insert(0, os.getcwd() + "/boards/esp32_generic")  # runner's cwd is the repo root
import board  # noqa: E402

A = (b"\x30\x03certA" * 40, b"\x30\x03keyA" * 20)
B = (b"\x30\x03certB-longer" * 50, b"\x30\x03keyB" * 10)
C = (b"\x30\x03certC" * 30, b"\x30\x03keyC" * 30)
NAMES = {A: "A", B: "B", C: "C"}
_BS = 4096


class _Cut(Exception):
    pass


class FakePartition:
    """A flash partition on a bytearray with NOR rules. With `cut_at`, that erase or program
    is torn (half done) and raises _Cut, as a power cut mid-write would leave it."""

    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, blocks=4, mem=None, cut_at=0):
        self.mem = mem if mem is not None else bytearray(b"\xff" * (blocks * _BS))
        self.cut_at, self.writes = cut_at, 0

    def _tick(self):
        self.writes += 1
        return self.writes == self.cut_at

    def _range(self, a, n):
        if a < 0 or a + n > len(self.mem):
            raise OSError(-260, "ESP_ERR_INVALID_SIZE")

    def readblocks(self, n, buf, off=0):
        a = n * _BS + off
        self._range(a, len(buf))
        buf[:] = self.mem[a : a + len(buf)]

    def _erase(self, a, n):
        self._range(a, n)
        torn = self._tick()
        for i in range(a, a + (n // 2 if torn else n)):
            self.mem[i] = 0xFF
        if torn:
            raise _Cut()

    def writeblocks(self, n, buf, off=None):
        if off is None:
            if len(buf) % _BS:
                raise OSError(-260, "ESP_ERR_INVALID_SIZE")
            self._erase(n * _BS, len(buf))
            off = 0
        a = n * _BS + off
        self._range(a, len(buf))
        torn = self._tick()
        for i in range(len(buf) // 2 if torn else len(buf)):
            self.mem[a + i] &= buf[i]
        if torn:
            raise _Cut()

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.mem) // _BS
        if op == 5:
            return _BS
        if op == 6:
            self._erase(arg * _BS, _BS)
            return 0
        return None


def _who(s):
    p = (s.certificate(), s.private_key())
    if p not in NAMES:
        raise AssertionError("store reads a pair that is none of A, B, C: %r" % (p[0][:12],))
    return NAMES[p]


def _info(s):
    d = s.describe()
    return d.get("slot"), d.get("seq"), d.get("staged")


def test_partition_rotation_cycle():
    p = FakePartition()
    new = lambda: PartitionStore(p, "upcert")  # noqa: E731
    s = new()
    eq(s.kind, "partition", "kind")
    s.write(*A)
    eq((_who(s), _info(s)), ("A", ("A", 1, False)), "provisioned in slot A")
    s.stage(*B)
    eq((_who(s), s.staged()), ("A", B), "stage keeps the active identity")
    eq((_who(new()), _info(new()), new().staged()), ("A", ("A", 1, True), B), "after reboot")
    new().commit()
    eq((_who(new()), _info(new())), ("B", ("B", 2, False)), "committed")
    new().rollback()
    eq((_who(new()), _info(new())), ("A", ("A", 3, False)), "rolled back (re-committed, seq 3)")
    s = new()
    s.stage(*C)
    s.commit()
    eq((_who(new()), _info(new())), ("C", ("B", 4, False)), "C in slot B")
    new().write(*A)  # provisioning again: a committed record in the idle slot
    eq((_who(new()), _info(new())), ("A", ("A", 5, False)), "write flips")
    eq(new().describe()["location"], "partition:upcert", "location")


def test_partition_empty_discard_and_misuse():
    p = FakePartition()
    s = PartitionStore(p, "creds")
    raises(StoreError, s.certificate, contains="partition:creds holds no committed credentials")
    true("holds no committed" in s.describe()["error"], "describe error")
    raises(StoreError, s.stage, *A, contains="no committed credentials")
    s.write(*A)
    raises(StoreError, s.rollback, contains="no intact previous identity")
    raises(StoreError, s.commit, contains="nothing staged to commit")
    raises(StoreError, s.write, b"", b"k", contains="refusing to write an empty")
    s.stage(*B)
    s.discard()
    eq(
        (s.staged(), _who(PartitionStore(p)), _info(PartitionStore(p))),
        (None, "A", ("A", 1, False)),
        "discarded",
    )
    true(p.mem[2 * _BS :] == b"\xff" * (2 * _BS), "slot B erased, key included")
    raises(StoreError, PartitionStore(FakePartition(blocks=1)).write, *A, contains="too small")
    big = (b"c" * 3000, b"k" * 1100)
    raises(
        StoreError,
        PartitionStore(FakePartition(blocks=2)).write,
        *big,
        contains=("4100 bytes) do not fit a 4032-byte slot", "partitions.csv"),
    )
    s = PartitionStore(FakePartition(blocks=4))  # two blocks per slot: that record fits
    s.write(*big)
    eq(s.private_key(), big[1], "two-block record")


def test_partition_damaged_active_falls_back_and_says_so():
    p = FakePartition()
    s = PartitionStore(p)
    s.write(*A)
    s.stage(*B)
    s.commit()
    p.mem[2 * _BS + 100] ^= 0x01  # one bit of B's certificate flips
    s = PartitionStore(p)
    eq(_who(s), "A", "previous identity used")
    eq(s.describe()["recovered"], "slot B damaged: using slot A", "describe")
    s.stage(*C)  # over the damaged record
    s.commit()
    eq((_who(PartitionStore(p)), _info(PartitionStore(p))), ("C", ("B", 2, False)), "repaired")


def _sequence(s):
    s.stage(*B)
    s.commit()
    s.stage(*C)
    s.commit()


def test_partition_power_cut_at_every_write():
    total = FakePartition()
    PartitionStore(total).write(*A)
    base, start = bytearray(total.mem), total.writes
    _sequence(PartitionStore(total))
    steps = total.writes - start
    eq(_who(PartitionStore(total)), "C", "uncut sequence")
    true(steps >= 5, "writes counted: %d" % steps)
    seen = ""
    for at in range(1, steps + 1):
        p = FakePartition(mem=bytearray(base), cut_at=at)
        try:
            _sequence(PartitionStore(p))
        except _Cut:
            pass
        p.cut_at = 0
        who = _who(PartitionStore(p))  # the reboot: a fresh store over what reached the flash
        true(not seen or who >= seen[-1], "identity went back at write %d: %s" % (at, seen))
        seen += who
    eq((seen[0], seen[-1]), ("A", "B"), "first and last cut: %s" % seen)
    true("B" in seen, "B between the commits: %s" % seen)


# -- esp_secure_cert ------------------------------------------------------------------------


def _tlv(t, data, flags=0, sub=0):
    # Layout of esp_secure_cert_mgr (header 12 bytes, data, zero pad to 16, crc32 footer).
    hdr = struct.pack("<IB3xBBH", 0xBA5EBA11, flags, t, sub, len(data))
    body = hdr + data + b"\0" * (-len(data) % 16)
    return body + struct.pack("<I", crc32(body, 0xFFFFFFFF))


def _pem(label, der):
    b64 = b2a_base64(der).replace(b"\n", b"")
    lines = b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n\0" % (label, lines, label)


_KEY = b"\x30\x81\x87" + bytes(range(135))  # stands in for PKCS#8 DER; never parsed here


def _image(*tlvs):
    p = FakePartition(blocks=2)
    img = b"".join(tlvs)
    p.mem[: len(img)] = img
    return p


def test_secure_cert_pem_and_der():
    p = _image(
        _tlv(0, _pem(b"CERTIFICATE", EC_DER)),
        _tlv(1, _pem(b"CERTIFICATE", EC_DER)),
        _tlv(2, _pem(b"PRIVATE KEY", _KEY)),
        _tlv(9, b"i" * 48),
    )
    s = SecureCertStore(p)
    eq((s.kind, s.certificate(), s.private_key()), ("esp_secure_cert", EC_DER, _KEY), "PEM TLVs")
    eq(
        s.describe(),
        {"kind": "esp_secure_cert", "location": "partition:esp_secure_cert", "read_only": True},
        "describe",
    )
    s = SecureCertStore(_image(_tlv(2, _KEY, sub=1), _tlv(2, _KEY + b"\x00"), _tlv(1, EC_DER)))
    eq((s.certificate(), s.private_key()), (EC_DER, _KEY), "DER, subtype 0 chosen")


def test_secure_cert_refusals():
    s = SecureCertStore(_image(_tlv(1, EC_DER)), "sc")
    for fn in (s.stage, s.commit, s.write, s.rollback):
        raises(
            StoreError,
            fn,
            EC_DER,
            _KEY,
            contains=("partition:sc) is read-only", "rotation is not possible"),
        )
    eq((s.staged(), s.discard()), (None, None), "nothing staged")
    raises(
        StoreError,
        s.private_key,
        contains=("no plaintext private key (none, or sealed", "store fs"),
    )
    raises(StoreError, SecureCertStore(_image()).certificate, contains="no device certificate")
    for img in (
        _tlv(2, _KEY, flags=0x08),
        _tlv(2, b"", flags=0x80) + _tlv(3, b"d" * 32),
        _tlv(3, b"ds" * 40),
    ):
        raises(StoreError, SecureCertStore(_image(img)).private_key, contains="sealed in the DS")
    bad = bytearray(_tlv(1, EC_DER))
    bad[40] ^= 1
    raises(
        StoreError,
        SecureCertStore(_image(bytes(bad))).certificate,
        contains="TLV type 1 at offset 0 fails its CRC",
    )
    raises(
        StoreError,
        SecureCertStore(_image(_tlv(1, b"-----BEGIN CERTIFICATE-----\n!!\n"))).certificate,
        contains="no '-----BEGIN CERTIFICATE-----' ... '-----END",
    )


# -- board.store() ----------------------------------------------------------------------------


class _Table:
    # esp32.Partition stand-in for board.py: find(type, label=) over a few FakePartitions.
    TYPE_APP = 0
    TYPE_DATA = 1
    parts = {}

    @staticmethod
    def find(type=0, subtype=0xFF, label=None):
        return [p for (t, lab), p in _Table.parts.items() if t == type and label in (None, lab)]


def test_board_store_partition_kinds():
    esp32.Partition = _Table
    data, sc = FakePartition(), _image(_tlv(1, EC_DER), _tlv(2, _KEY))
    _Table.parts = {(1, "upcert"): data, (0x3F, "esp_secure_cert"): sc}
    s = board.store({"store": {"kind": "partition"}})
    s.write(*A)
    eq((type(s).__name__, _who(PartitionStore(data))), ("PartitionStore", "A"), "partition kind")
    s = board.store({"store": {"kind": "esp_secure_cert"}})
    eq((s.certificate(), s.private_key()), (EC_DER, _KEY), "esp_secure_cert kind")
    raises(
        StoreError,
        board.store,
        {"store": {"kind": "partition", "label": "creds"}},
        contains=("no partition labelled 'creds'", "boards/esp32_generic/partitions.csv"),
    )
    del esp32.Partition
