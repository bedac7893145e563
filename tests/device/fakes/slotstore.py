# An in-memory credential store with A/B slots, the interface rotation.py calls (stage, staged,
# commit, discard, rollback, describe), until the real slot stores land. Records the order of
# calls in `calls` (shared with the test's trial connector) so tests can check the sequence.
from upcert.errors import StoreError


class SlotStore:
    """Slots 0 and 1; `active` holds the pair in use. fail: method name that raises StoreError."""

    kind = "fs"

    def __init__(self, cert, key, calls=None):
        self.slots = [(cert, key), None]
        self.active = 0
        self.stg = None
        self.seq = 1
        self.calls = [] if calls is None else calls
        self.fail = None

    def _call(self, name):
        self.calls.append(name)
        if self.fail == name:
            raise StoreError("%s failed (test)" % name)

    def certificate(self):
        return self.slots[self.active][0]

    def private_key(self):
        return self.slots[self.active][1]

    def signer(self):
        return None

    def write(self, cert, key):
        self.slots[self.active] = (bytes(cert), bytes(key))

    def stage(self, cert, key):
        self._call("stage")
        if not cert or not key:
            raise StoreError("refusing to stage an empty certificate or key")
        idle = 1 - self.active
        self.slots[idle] = (bytes(cert), bytes(key))
        self.stg = idle

    def staged(self):
        return None if self.stg is None else self.slots[self.stg]

    def commit(self):
        self._call("commit")
        if self.stg is None:
            raise StoreError("nothing staged to commit")
        self.active = self.stg
        self.stg = None
        self.seq += 1

    def discard(self):
        self._call("discard")
        if self.stg is not None:
            self.slots[self.stg] = None
            self.stg = None

    def rollback(self):
        self._call("rollback")
        other = 1 - self.active
        if self.slots[other] is None:
            raise StoreError("no previous pair to roll back to")
        self.active = other
        self.seq += 1

    def describe(self):
        return {
            "kind": self.kind,
            "location": "memory",
            "slot": "ab"[self.active],
            "seq": self.seq,
            "staged": self.stg is not None,
        }
