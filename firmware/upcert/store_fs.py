# Credential store "fs": DER files on the board's flash. Slot A is `<root>/cert.der` + `key.der`
# (the single-slot layout), slot B `cert-b.der` + `key-b.der`, and `slots.bin` the journal naming
# the active slot (store_slots.SlotStore, store_journal.Journal), replaced by rename: atomic on
# littlefs.
import os

from upcert.errors import StoreError
from upcert.store import SLOTS, WHAT, read
from upcert.store_slots import SlotStore

FILES = (("cert.der", "key.der"), ("cert-b.der", "key-b.der"))


def exists(path):
    """True when `path` exists."""
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def replace(src, dst):
    """Rename src over dst: atomic on littlefs (and POSIX); FAT refuses an existing dst."""
    try:
        os.rename(src, dst)
    except OSError:
        if not (exists(src) and exists(dst)):
            raise
        os.remove(dst)
        os.rename(src, dst)


def _remove(*paths):
    for p in paths:
        try:
            os.remove(p)
        except OSError:
            pass  # not there


def make(st, atecc=None):
    """The store for config "store" settings st (store.make): root, default /upcert.d."""
    return FsStore(st.get("root", "/upcert.d"))


class FsStore(SlotStore):
    """Certificate and PKCS#8 key as DER files under `root`.

    The single-slot write() writes both `*.tmp` files, then renames cert, then key. A power
    cut leaves the old pair, the new pair, or new cert + complete key.der.tmp, which the next
    access finishes. Slot files are written in place: the journal names them only afterwards."""

    kind = "fs"

    def __init__(self, root="/upcert.d"):
        self.root = self.location = root
        self._cert = root + "/cert.der"
        self._key = root + "/key.der"
        self._j = root + "/slots.bin"

    def _recover(self):
        # Only key.tmp left means the cert was already renamed (both tmps were complete): roll
        # forward. Any other leftover tmp is from an interrupted write: the old pair stands.
        ct, kt = self._cert + ".tmp", self._key + ".tmp"
        c, k = exists(ct), exists(kt)
        if k and not c:
            replace(kt, self._key)
        elif c or k:
            _remove(ct, kt)

    def _get1(self, slot, i):
        if slot == 0:
            self._recover()
        return read(self.root + "/" + FILES[slot][i], WHAT[i])

    def _jget(self):
        tmp = self._j + ".tmp"
        if exists(self._j):
            if exists(tmp):
                os.remove(tmp)  # an interrupted journal write: the old journal stands
            return read(self._j, "slot journal")
        if exists(tmp):
            # No journal but a tmp: the first journal write was cut short (an empty or torn tmp:
            # it never took effect), or a rename on FAT was (a complete tmp: finish it).
            from upcert.store_journal import Journal

            with open(tmp, "rb") as f:
                data = f.read()
            if Journal.decode(data) is not None:
                replace(tmp, self._j)
                return data
            os.remove(tmp)
        return None

    def _put(self, slot, cert, key):
        # Slot `slot`'s files, written in place (the journal does not name them yet).
        try:
            for i, data in enumerate((cert, key)):
                with open(self.root + "/" + FILES[slot][i], "wb") as f:
                    f.write(data)
        except OSError as exc:
            self._wipe(slot)  # a full flash leaves no half-written or empty slot file behind
            raise StoreError(
                "writing slot %s in %s failed (%s)" % (SLOTS[slot], self.root, exc)
            ) from None

    def _jput(self, data):
        # Replace the journal: write journal.tmp, then rename it over the journal (atomic).
        with open(self._j + ".tmp", "wb") as f:
            f.write(data)
        replace(self._j + ".tmp", self._j)

    def _wipe(self, slot):
        # Remove slot `slot`'s files (the journal names them no more). littlefs is copy-on-write:
        # it frees their blocks, whose bytes stay on the flash until reused; nothing here can
        # erase them in place (README, "Keys on the flash").
        for name in FILES[slot]:
            _remove(self.root + "/" + name)

    def _forget(self):
        # Drop the journal: back to the single-slot layout.
        for p in (self._j, self._j + ".tmp"):
            if exists(p):
                os.remove(p)

    def _write1(self, cert_der, key_der):
        # The single-slot write: both *.tmp files, then rename cert, then key (see the class).
        self._recover()
        try:
            os.mkdir(self.root)
        except OSError:
            pass  # already there
        try:
            for path, data in ((self._cert, cert_der), (self._key, key_der)):
                with open(path + ".tmp", "wb") as f:
                    f.write(data)
        except OSError as exc:
            _remove(self._cert + ".tmp", self._key + ".tmp")  # no empty or torn .tmp left
            raise StoreError(
                "writing %s.tmp failed (%s): old credentials kept" % (path, exc)
            ) from None
        replace(self._cert + ".tmp", self._cert)
        replace(self._key + ".tmp", self._key)
