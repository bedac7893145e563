# Device tests for the two-slot rotation API of stores "fs" and "nvs" (store_slots.SlotStore): stage,
# commit, discard, rollback, damage fallback, and a power cut injected at every write step.
import os

import esp32
from checks import eq, raises, tmpdir, true
from upcert import store_fs
from upcert.errors import StoreError
from upcert.store_fs import FsStore
from upcert.store_nvs import NvsStore

A = (b"\x30\x03certA" * 40, b"\x30\x03keyA" * 20)
B = (b"\x30\x03certB-longer" * 50, b"\x30\x03keyB" * 10)
C = (b"\x30\x03certC" * 30, b"\x30\x03keyC" * 30)
NAMES = {A: "A", B: "B", C: "C"}


class _Cut(Exception):
    pass


_made = [0]  # folders made so far (MicroPython functions take no attributes)


def _fresh(name):
    _made[0] += 1
    return tmpdir("%s%d" % (name, _made[0]))


def _fs():
    root = _fresh("fs") + "/upcert.d"
    return lambda: FsStore(root)


def _nvs():
    esp32.reset()
    return lambda: NvsStore(esp32.NVS("upcert"))


def _pair(s):
    return s.certificate(), s.private_key()


def _who(s):
    """Name of the identity the store reads; fails on a mixed or unknown pair."""
    p = _pair(s)
    if p not in NAMES:
        raise AssertionError("store reads a pair that is none of A, B, C: %r" % (p[0][:12],))
    return NAMES[p]


def _info(s):
    d = s.describe()
    return d.get("slot"), d.get("seq"), d.get("staged")


def test_rotation_cycle():
    for make in (_fs, _nvs):
        new = make()
        s = new()
        s.write(*A)
        eq((_who(s), _info(s)), ("A", ("A", 0, False)), "provisioned: single-slot layout")
        s.stage(*B)
        eq(_who(s), "A", "stage keeps the active identity")
        eq(s.staged(), B, "staged pair")
        s = new()  # a reboot before commit: still A, B still staged
        eq((_who(s), _info(s), s.staged()), ("A", ("A", 0, True), B), "after reboot")
        s.commit()
        eq((_who(s), _info(s), s.staged()), ("B", ("B", 1, False), None), "committed")
        eq((_who(new()), _info(new())), ("B", ("B", 1, False)), "committed, after reboot")
        s.rollback()
        eq((_who(new()), _info(new())), ("A", ("A", 2, False)), "rolled back")
        s = new()
        s.rollback()  # and forward again: the identity we left is the previous one now
        eq((_who(new()), _info(new())), ("B", ("B", 3, False)), "rolled forward")
        s.stage(*C)
        s.commit()
        eq((_who(new()), _info(new())), ("C", ("A", 4, False)), "C in slot A")
        raises(StoreError, new().commit, contains="nothing staged to commit: call stage() first")


def test_discard_and_misuse():
    for make in (_fs, _nvs):
        new = make()
        s = new()
        raises(StoreError, s.stage, *A, contains="upcert provision")  # nothing active yet
        s.write(*A)
        raises(StoreError, s.rollback, contains="no intact previous identity")
        raises(StoreError, s.stage, b"", b"k", contains="refusing to write an empty")
        s.stage(*B)
        s.discard()
        eq((s.staged(), _who(new()), _info(new())), (None, "A", ("A", 0, False)), "discarded")
        raises(StoreError, s._get1, 1, 1, contains="private key")  # the key is erased
        raises(StoreError, s.commit, contains="nothing staged")
        s.discard()  # nothing staged: no-op
    s = _fs()()
    s.write(*A)
    s.stage(*B)
    s.discard()
    eq(sorted(os.listdir(s.root)), ["cert.der", "key.der", "slots.bin"], "slot B files removed")


def test_write_on_a_slotted_store_flips():
    for make in (_fs, _nvs):
        new = make()
        s = new()
        s.write(*A)
        s.stage(*B)
        s.commit()
        s.write(*C)  # provisioning again: stage + commit, the previous identity kept idle
        eq((_who(new()), _info(new())), ("C", ("A", 2, False)), "write flips")
        new().rollback()
        eq(_who(new()), "B", "previous kept")


def _damage(new, slot):
    s = new()
    if isinstance(s, FsStore):
        name = s.root + "/" + ("cert.der", "cert-b.der")[slot]
        with open(name, "wb") as f:
            f.write(b"\x30\x03torn")
    else:
        nvs = s._nvs
        nvs.set_blob(("key", "key_b")[slot], b"\x30\x03torn")
        nvs.commit()


def test_damaged_active_slot_falls_back_and_says_so():
    for make in (_fs, _nvs):
        new = make()
        s = new()
        s.write(*A)
        s.stage(*B)
        s.commit()
        _damage(new, 1)  # B's slot
        s = new()
        eq(_who(s), "A", "intact previous identity used")
        d = s.describe()
        eq((d["slot"], d["recovered"]), ("A", "slot B damaged: using slot A"), "describe")
        s.stage(*C)  # goes to the damaged slot, not over the identity in use
        s.commit()
        eq((_who(new()), _info(new())), ("C", ("B", 2, False)), "repaired by rotation")


def test_damaged_both_slots_and_journal_then_reprovision():
    for make in (_fs, _nvs):
        new = make()
        s = new()
        s.write(*A)
        s.stage(*B)
        s.commit()
        _damage(new, 0)
        _damage(new, 1)
        raises(StoreError, new().certificate, contains=("slot B is damaged", "upcert provision"))
        true("error" in new().describe(), "describe reports the damage")
        new().write(*C)  # provisioning repairs: back to the single-slot layout
        eq((_who(new()), _info(new())), ("C", ("A", 0, False)), "reprovisioned")
    root = tmpdir("badjournal")
    s = FsStore(root)
    s.write(*A)
    with open(root + "/slots.bin", "wb") as f:
        f.write(b"UPJ1" + b"\0" * 74)
    raises(
        StoreError, FsStore(root).private_key, contains="slot journal of " + root + " is damaged"
    )


def test_fs_journal_leftovers():
    root = tmpdir("jleft")
    s = FsStore(root)
    s.write(*A)
    s.stage(*B)
    with open(root + "/slots.bin", "rb") as f:
        staged = f.read()
    s.commit()
    # A torn journal.tmp beside the journal: an interrupted write, the journal stands.
    with open(root + "/slots.bin.tmp", "wb") as f:
        f.write(staged[:30])
    eq(_who(FsStore(root)), "B", "journal stands")
    true("slots.bin.tmp" not in os.listdir(root), "torn tmp removed")
    # A complete tmp and no journal (a rename cut short on FAT): roll forward.
    os.rename(root + "/slots.bin", root + "/slots.bin.tmp")
    eq((_who(FsStore(root)), _info(FsStore(root))), ("B", ("B", 1, False)), "rolled forward")
    # A torn tmp and no journal: the single-slot layout stands (slot A).
    os.remove(root + "/slots.bin")
    with open(root + "/slots.bin.tmp", "wb") as f:
        f.write(staged[:30])
    eq(_who(FsStore(root)), "A", "torn first journal ignored")


# -- power cuts: every mutating step of stage/commit cut in turn -------------------------------


class _CutFile:
    def __init__(self, f, cut):
        self._f, self._cut = f, cut

    def write(self, data):
        if self._cut.tick():
            self._f.write(data[: len(data) // 2])  # torn: half the bytes reached the flash
            raise _Cut()
        return self._f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


class _CutOs:
    # The `os` of store_fs.py: stat passes through; rename, remove and mkdir
    # may be cut (not done).
    def __init__(self, cut):
        self._cut = cut
        self.stat = os.stat

    def _op(self, fn, *args):
        if self._cut.tick():
            raise _Cut()
        return fn(*args)

    def rename(self, a, b):
        return self._op(os.rename, a, b)

    def remove(self, p):
        return self._op(os.remove, p)

    def mkdir(self, p):
        return self._op(os.mkdir, p)


class _CutNvs:
    # An NVS handle whose k-th set/erase/commit never happens (the power is cut there).
    def __init__(self, nvs, cut):
        self._nvs, self._cut = nvs, cut

    def get_blob(self, key, buf):
        return self._nvs.get_blob(key, buf)

    def _op(self, name, *args):
        if self._cut.tick():
            raise _Cut()
        return getattr(self._nvs, name)(*args)

    def set_blob(self, key, value):
        return self._op("set_blob", key, value)

    def erase_key(self, key):
        return self._op("erase_key", key)

    def commit(self):
        return self._op("commit")


class _Counter:
    def __init__(self, at):
        self.at, self.n = at, 0

    def tick(self):
        self.n += 1
        return self.n == self.at


def _sequence(s):
    s.stage(*B)
    s.commit()
    s.stage(*C)
    s.commit()


def _run_cut(kind, at):
    """Provision A, then run the rotation sequence with a cut at step `at` (0: none); kind "fs",
    "nvs" (uncommitted NVS changes lost at the cut) or "nvs-kept" (they stay).
    Returns (identity after the 'reboot', steps counted)."""
    cut = _Counter(at)
    if kind == "fs":
        root = _fresh("cut")
        FsStore(root).write(*A)
        store_fs.open = lambda p, m="r": _CutFile(open(p, m), cut) if "w" in m else open(p, m)
        store_fs.os = _CutOs(cut)
        s, new = FsStore(root), lambda: FsStore(root)
    else:
        esp32.reset()
        NvsStore(esp32.NVS("upcert")).write(*A)
        s, new = NvsStore(_CutNvs(esp32.NVS("upcert"), cut)), lambda: NvsStore(esp32.NVS("upcert"))
    try:
        _sequence(s)
    except _Cut:
        pass
    finally:
        store_fs.os = os
        if "open" in store_fs.__dict__:
            del store_fs.open
    if kind == "nvs":
        esp32.power_cut()  # what was set but not committed is lost (ESP-IDF's documented case)
    # "nvs-kept": it stays (what ESP-IDF does today: nvs_set_blob writes the flash at once)
    return _who(new()), cut.n


def test_power_cut_at_every_step():
    for kind in ("fs", "nvs", "nvs-kept"):
        final, steps = _run_cut(kind, 0)
        eq(final, "C", kind + ": uncut sequence")
        true(steps >= 4, kind + ": steps counted")
        seen = []
        for at in range(1, steps + 1):
            who, _ = _run_cut(kind, at)
            true(not seen or who >= seen[-1], "%s: identity went back at step %d" % (kind, at))
            seen.append(who)
        # A cut step never happened (a torn write or a rename not done): the last one is the
        # final commit's journal write, so only the uncut run reaches C; unless an uncommitted
        # NVS set survives the cut, as the journal's does when only its commit() is cut.
        last = "C" if kind == "nvs-kept" else "B"
        eq((seen[0], seen[-1]), ("A", last), kind + ": first and last cut")
        true("B" in seen, kind + ": B reached between the commits: %r" % (seen,))


def test_journal_bytes_on_flash_are_unchanged():
    # Boards in the field hold journals in this layout: magic "UPJ1", active slot, idle-slot
    # state (3: TRIAL), seq, SHA-256 of the active and idle pairs (lengths, then the DER), then
    # the first 4 bytes of the SHA-256 of those 74 bytes. slots.bin (fs) and blob "slots" (nvs).
    import hashlib
    import struct

    def h(pair):
        d = hashlib.sha256(struct.pack("<II", len(pair[0]), len(pair[1])))
        d.update(pair[0])
        d.update(pair[1])
        return d.digest()

    body = struct.pack("<4sBBI32s32s", b"UPJ1", 1, 3, 1, h(B), h(A))
    want = body + hashlib.sha256(body).digest()[:4]
    for make in (_fs, _nvs):
        s = make()()
        s.write(*A)
        s.stage(*B)
        s.commit()
        if isinstance(s, FsStore):
            with open(s.root + "/slots.bin", "rb") as f:
                got = f.read()
        else:
            got = s._jget()
        eq(got, want, type(s).__name__ + " journal")
