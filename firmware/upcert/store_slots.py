# SlotStore, the resident base of stores "fs", "nvs" and "atecc608" (two credential slots and a
# journal naming the active one; store_part.py reuses its read side): the identity from the
# decoded journal state it keeps. The journal itself (store_journal.Journal: its record, the slot
# check, every change) is imported only to read or change it; after a read it is dropped again.
# Imports only downward: store.py, store_journal.py.
import sys

from upcert import drop
from upcert.errors import StoreError
from upcert.store import NONE, SLOTS, STAGED, TRIAL, Store

_JOURNAL = "upcert.store_journal"


class SlotStore(Store):
    """Two credential slots (A, B) and a journal naming the active one.

    Subclasses provide `_get1(slot, i)` (i: 0 cert, 1 key; StoreError when missing or empty),
    `_put(slot, cert, key)`, `_wipe(slot)` (erase a slot the journal no longer names), `_jget()`
    -> journal bytes or None, `_jput(data)` (the one atomic step), `_forget()` (drop the
    journal) and `_write1(cert, key)` (the single-slot write).
    Without a journal the store is the single-slot layout: slot A, seq 0. The journal holds the
    SHA-256 of each slot's pair, so a torn or damaged slot is never used: the active pair is
    checked at every boot, and when it fails the other slot is used if it is intact."""

    _st = None  # cached [active, idle state, seq, digest active, digest idle, cert, key, note]

    def _journal(self):
        from upcert.store_journal import Journal

        return Journal(self)

    def _get(self, slot):
        return self._get1(slot, 0), self._get1(slot, 1)

    def _state(self):
        if self._st:
            return self._st
        loaded = _JOURNAL in sys.modules  # a change under way: it keeps the journal loaded
        j = self._jget()
        if j is None:  # single-slot layout: files/blobs read one by one, as before rotation
            return [0, NONE, 0, None, b"", None, None, None]
        self._st = self._journal().load(j)
        if not loaded:
            drop("store_journal")  # read once: only the decoded state stays
        return self._st

    def _item(self, i):
        st = self._state()
        return self._get1(0, i) if st[5] is None else st[5 + i]

    def certificate(self):
        """Device certificate DER of the active slot; StoreError when missing or damaged."""
        return self._item(0)

    def private_key(self):
        """Private key DER (PKCS#8) of the active slot; StoreError when missing or damaged."""
        return self._item(1)

    def describe(self):
        """Adds slot ('A'/'B'), seq (commit counter), staged (bool) and, after a fallback,
        recovered (what was damaged) when an identity is readable; error when it is not."""
        d = Store.describe(self)
        try:
            st = self._state()
        except StoreError as exc:
            d["error"] = str(exc)
            return d
        try:
            if st[5] is None:  # single-slot layout: is there an identity at all?
                self._get(0)
        except StoreError:
            return d
        d.update(slot=SLOTS[st[0]], seq=st[2], staged=st[1] == STAGED)
        if st[7]:
            d["recovered"] = st[7]
        return d

    # -- rotation: the journal's (store_journal.Journal), loaded only when there is work -----

    def trial(self):
        """The previous identity's certificate (DER) while the active one, committed, is not
        proven yet; None otherwise."""
        if self._state()[1] != TRIAL:
            return None
        pair = self._journal().idle()
        return pair[0] if pair else None

    def staged(self):
        """(cert, key) staged by stage(), or None."""
        return self._journal().idle() if self._state()[1] == STAGED else None

    def stage(self, cert, key):
        """Write the pair to the idle slot and check it reads back (SHA-256); the active slot
        stays active. StoreError when it does not read back."""
        self._journal().stage(cert, key)

    def commit(self):
        """Make the staged slot active in one atomic journal write; the old one is kept idle as
        the rollback target, and the new one is on trial until proven() (the watch survives a
        reboot)."""
        self._journal().commit()

    def rollback(self):
        """After commit(), make the previous slot active again if it is still intact."""
        self._journal().rollback()

    def proven(self):
        """The active identity has worked (the broker acknowledged its telemetry): no rollback
        watch any more (one journal write, only while it was on trial)."""
        if self._state()[1] == TRIAL:
            self._journal().proven()

    def discard(self):
        """Forget a staged pair (rollback before commit), then erase it: its key must not
        linger."""
        if self._state()[1] == STAGED:
            self._journal().discard()

    def write(self, cert, key):
        """Provisioning: make (cert, key) the active identity. The single-slot layout is
        rewritten in place (crash-safe); a slotted store stages and commits; a damaged one
        starts again from the single-slot layout."""
        self._journal().write(cert, key)
