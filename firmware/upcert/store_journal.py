# The A/B slot journal of stores "fs", "nvs" and "atecc608": its record on flash, the check of
# the slot it names, and every change (write, stage, commit, rollback, proven, discard), each
# ending in one journal write. Not resident: store_slots.SlotStore imports it when it reads the
# journal or changes it, keeps the decoded state, and the module is dropped after (rotation.py).
# Imports only the interface, store.py.
import hashlib
import struct

from micropython import const

from upcert.errors import StoreError
from upcert.store import NONE, PREV, SLOTS, STAGED, TRIAL

# Journal (on flash: keep it): magic, active slot, idle-slot state, seq, digest(active pair),
# digest(idle pair); then the first 4 bytes of its own SHA-256, so a damaged one is never believed.
_JFMT = const("<4sBBI32s32s")
_JMAGIC = const(b"UPJ1")
_JLEN = const(78)


def _digest(cert, key):
    # SHA-256 naming a (certificate, key) pair: both lengths, then both DER blobs.
    h = hashlib.sha256(struct.pack("<II", len(cert), len(key)))
    h.update(cert)
    h.update(key)
    return h.digest()


class Journal:
    """The journal of one slot store `s` (a store_slots.SlotStore), used for one operation.

    It reads and writes through the store's primitives (`_get1`, `_put`, `_wipe`, `_jput`,
    `_forget`, `_write1`) and leaves the decoded state in `s._st`: [active slot, idle state,
    seq, digest active, digest idle, cert, key, note]."""

    def __init__(self, s):
        self.s = s

    @staticmethod
    def decode(data):
        """(active, idle state, seq, digest active, digest idle) of journal bytes; None when
        damaged."""
        if not data or len(data) != _JLEN or hashlib.sha256(data[:-4]).digest()[:4] != data[-4:]:
            return None
        f = struct.unpack(_JFMT, data)
        return None if f[0] != _JMAGIC or f[1] > 1 else f[1:]

    def _try(self, slot, want):
        # The (cert, key) of `slot` when it reads back with digest `want`; None otherwise.
        try:
            pair = self.s._get(slot)
        except StoreError:
            return None
        return pair if _digest(*pair) == want else None

    def load(self, data):
        """The state of journal bytes `data`, the active pair checked against its digest (the
        other slot when it fails and is intact). StoreError when neither is usable."""
        where = self.s.location
        f = self.decode(data)
        if f is None:
            raise StoreError("slot journal of %s is damaged: run `upcert provision`" % where)
        a, idle, seq, ha, hi = f
        note = None
        pair = self._try(a, ha)
        if pair is None:
            pair = self._try(1 - a, hi) if idle else None
            if pair is None:
                raise StoreError(
                    "%s: slot %s is damaged and slot %s holds no intact identity: run "
                    "`upcert provision`" % (where, SLOTS[a], SLOTS[1 - a])
                )
            note = "slot %s damaged: using slot %s" % (SLOTS[a], SLOTS[1 - a])
            a, idle, ha, hi = 1 - a, NONE, hi, b""
        return [a, idle, seq, ha, hi, pair[0], pair[1], note]

    def idle(self):
        """The idle slot's pair when it reads back as the journal names it; None otherwise."""
        st = self.s._state()
        return self._try(1 - st[0], st[4])

    # -- changes: each is one journal write ---------------------------------------------------

    def _put(self, a, idle, seq, ha, hi):
        body = struct.pack(_JFMT, _JMAGIC, a, idle, seq, ha, hi)
        self.s._st = None
        self.s._jput(body + hashlib.sha256(body).digest()[:4])

    def _nonempty(self, cert, key):
        if not cert or not key:
            raise StoreError("refusing to write an empty certificate or key to " + self.s.location)

    def stage(self, cert, key):
        """Write the pair to the idle slot and check it reads back (SHA-256); the active slot
        stays active. StoreError when it does not read back."""
        s = self.s
        self._nonempty(cert, key)
        st = s._state()
        ha = st[3] or _digest(*s._get(0))
        idle, h = 1 - st[0], _digest(cert, key)
        s._st = None
        s._put(idle, cert, key)
        if self._try(idle, h) is None:
            raise StoreError(
                "%s: slot %s does not read back as written (flash worn or full?); the active "
                "identity is kept" % (s.location, SLOTS[idle])
            )
        self._put(st[0], STAGED, st[2], ha, h)

    def _flip(self, need, why, then):
        # The idle slot becomes active, the active one the rollback target (idle state `then`):
        # one journal write.
        st = self.s._state()
        if st[1] not in need or self._try(1 - st[0], st[4]) is None:
            raise StoreError("%s: %s" % (self.s.location, why))
        self._put(1 - st[0], then, st[2] + 1, st[4], st[3])

    def commit(self):
        """The staged slot becomes active, on trial until proven()."""
        self._flip((STAGED,), "nothing staged to commit: call stage() first", TRIAL)

    def rollback(self):
        """The previous slot becomes active again if it is still intact."""
        self._flip((PREV, TRIAL), "no intact previous identity to roll back to", PREV)

    def proven(self):
        """No rollback watch any more (only while on trial)."""
        st = self.s._state()
        if st[1] == TRIAL:
            self._put(st[0], PREV, st[2], st[3], st[4])

    def discard(self):
        """Forget a staged pair, then erase it: its key must not linger."""
        st = self.s._state()
        if st[1] == STAGED:
            self._put(st[0], NONE, st[2], st[3], b"")
            self.s._wipe(1 - st[0])

    def write(self, cert, key):
        """Provisioning: the single-slot layout is rewritten in place (crash-safe); a slotted
        store stages and commits; a damaged one starts again from the single-slot layout."""
        s = self.s
        self._nonempty(cert, key)
        try:
            slotted = s._state()[3] is not None
        except StoreError:
            slotted = None
        s._st = None
        if slotted:
            self.stage(cert, key)
            self._flip((STAGED,), "", PREV)  # provisioned on purpose: no trial, nothing to watch
        else:
            s._write1(cert, key)
            if slotted is None:
                s._forget()
