# Credential store "fs": DER files on the board's flash. Slot A is `<root>/cert.der` + `key.der`
# (the single-slot layout), slot B `cert-b.der` + `key-b.der`, and `slots.bin` the journal naming
# the active slot (store.SlotStore), replaced by rename: atomic on littlefs.
import os

from upcert.store import WHAT, SlotStore, jdecode, later, read

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


class FsStore(SlotStore):
    """Certificate and PKCS#8 key as DER files under `root`.

    The single-slot write() writes both `*.tmp` files, then renames cert, then key. A power
    cut leaves the old pair, the new pair, or new cert + complete key.der.tmp, which the next
    access finishes. Slot files are written in place: the journal names them only afterwards.
    The writing methods are in store_slots.py (fs_*), loaded when something is written."""

    kind = "fs"
    _put = later("fs_put")
    _wipe = later("fs_wipe")
    _jput = later("fs_jput")
    _forget = later("fs_forget")
    _write1 = later("fs_write1")

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
            for p in (ct, kt):
                if exists(p):
                    os.remove(p)

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
            with open(tmp, "rb") as f:
                data = f.read()
            if jdecode(data) is not None:
                replace(tmp, self._j)
                return data
            os.remove(tmp)
        return None
