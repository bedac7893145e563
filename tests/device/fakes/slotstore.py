# The real A/B slot store of the device (upcert.store_fs.FsStore over a fresh folder of the unix
# port's filesystem), recording the writing calls rotation.py makes (stage, commit, discard,
# rollback) in `calls`, shared with the test's trial connector so tests can check the order.
# Not a stand-in: every stage, commit, discard and rollback runs the store's own code.
import os

from checks import tmpdir
from upcert.errors import StoreError
from upcert.store_fs import FILES, FsStore

_n = [0]


class RecordedFsStore(FsStore):
    """RecordedFsStore(cert, key, calls=None): a provisioned FsStore (single-slot write, as
    `upcert provision` leaves it). fail: name of a method that raises `exc` (StoreError, or
    MemoryError for out-of-memory tests) before doing anything, as a full flash or heap would."""

    def __init__(self, cert, key, calls=None):
        _n[0] += 1
        FsStore.__init__(self, tmpdir("store%d" % _n[0]))
        self.calls = [] if calls is None else calls
        self.fail = None
        self.exc = StoreError
        FsStore.write(self, cert, key)

    def _call(self, name):
        self.calls.append(name)
        if self.fail == name:
            raise self.exc("%s failed (test)" % name)

    def stage(self, cert, key):
        self._call("stage")
        FsStore.stage(self, cert, key)

    def commit(self):
        self._call("commit")
        FsStore.commit(self)

    def discard(self):
        self._call("discard")
        FsStore.discard(self)

    def rollback(self):
        self._call("rollback")
        FsStore.rollback(self)

    def slot_files(self, slot):
        """Names of slot `slot`'s files (0 = A, 1 = B) that exist on the filesystem."""
        return [n for n in FILES[slot] if n in os.listdir(self.root)]

    def lose(self, slot):
        """Remove slot `slot`'s files, as a damaged or erased slot would leave it."""
        for n in self.slot_files(slot):
            os.remove(self.root + "/" + n)
        self._st = None  # read the flash again, as after a reboot
