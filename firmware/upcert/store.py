# Credential stores: the Store interface (docs/ARCHITECTURE.md "store"), the read side of
# SlotStore (slots A/B and a journal naming the active one; its writes are in store_slots.py,
# loaded on first use) and the trust anchors file. Kinds: store_fs.py, store_nvs.py, store_part.py.
import hashlib
import struct

from micropython import const

from upcert.errors import CertificateError, StoreError

ROOTS = "/upcert.d/roots.der"
SLOTS = "AB"
WHAT = ("device certificate", "private key")
# Journal: magic, active slot, idle-slot state, seq, digest(active pair), digest(idle pair);
# then the first 4 bytes of its own SHA-256, so a damaged journal is never believed.
JFMT = "<4sBBI32s32s"
JMAGIC = b"UPJ1"
_JLEN = const(78)
NONE = const(0)  # idle slot: nothing useful
PREV = const(1)  # idle slot: the identity before the last commit (rollback target)
STAGED = const(2)  # idle slot: staged by stage(), not committed yet
# idle slot: the identity before the last commit, and the active one is not proven yet (no
# telemetry acknowledged): the rollback watch outlives a reboot. proven() turns it into PREV.
TRIAL = const(3)


def digest(cert, key):
    """SHA-256 naming a (certificate, key) pair: both lengths, then both DER blobs."""
    h = hashlib.sha256(struct.pack("<II", len(cert), len(key)))
    h.update(cert)
    h.update(key)
    return h.digest()


def read(path, what):
    """Bytes of the file at `path`; StoreError naming `what` when it is missing or empty."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise StoreError(
            "%s %s missing (%s): run `upcert provision` to write it" % (what, path, exc)
        ) from None
    if not data:
        raise StoreError("%s %s is empty: run `upcert provision` to rewrite it" % (what, path))
    return data


def jdecode(data):
    """(active, idle state, seq, digest active, digest idle) of a journal; None when damaged."""
    if not data or len(data) != _JLEN or hashlib.sha256(data[:-4]).digest()[:4] != data[-4:]:
        return None
    f = struct.unpack(JFMT, data)
    return None if f[0] != JMAGIC or f[1] > 1 else f[1:]


class Store:
    """Base of the credential stores. Subclasses set `kind` and `location` and implement
    certificate() -> DER, private_key() -> DER (or None when a secure element holds the key),
    write(cert_der, key_der); signer() returns None or an object with sign_digest(digest32).
    Rotation: stage(cert, key), staged(), commit(), discard(), rollback() (SlotStore and
    store_part.PartitionStore); on this base they refuse, as for a read-only identity.
    Missing or corrupt data raises StoreError naming what is missing and where."""

    kind = "?"
    location = "?"

    def signer(self):
        """None: the private key is in private_key(), not in a secure element."""
        return None

    def describe(self):
        """{'kind': ..., 'location': ...} for status reports."""
        return {"kind": self.kind, "location": self.location}

    def _read_only(self, *args):
        raise StoreError(
            "store %s (%s) is read-only: rotation is not possible on a read-only identity"
            % (self.kind, self.location)
        )

    write = stage = commit = rollback = _read_only

    def staged(self):
        """None: nothing is staged in a read-only store (discard() does nothing either)."""
        return None

    discard = trial = proven = staged


def later(name):
    """A method whose code stays in store_slots.py (function `name`) until first called."""

    def method(self, *args):
        from upcert import store_slots

        return getattr(store_slots, name)(self, *args)

    return method


class SlotStore(Store):
    """Two credential slots (A, B) and a journal naming the active one.

    Subclasses provide `_get1(slot, i)` (i: 0 cert, 1 key; StoreError when missing or empty),
    `_put(slot, cert, key)`, `_wipe(slot)` (erase a slot the journal no longer names), `_jget()`
    -> journal bytes or None, `_jput(data)` (the one atomic step), `_forget()` (drop the
    journal) and `_write1(cert, key)` (the single-slot write).
    Without a journal the store is the single-slot layout: slot A, seq 0. The journal holds the
    SHA-256 of each slot's pair, so a torn or damaged slot is never used: the active pair is
    checked at every boot, and when it fails the other slot is used if it is intact.
    write, stage, staged, commit, discard, rollback: see store_slots.py."""

    _st = None  # cached [active, idle state, seq, digest active, digest idle, cert, key, note]
    write = later("write")
    trial = later("trial")
    proven = later("proven")
    stage = later("stage")
    staged = later("staged")
    commit = later("commit")
    discard = later("discard")
    rollback = later("rollback")

    def _get(self, slot):
        return self._get1(slot, 0), self._get1(slot, 1)

    def _try(self, slot, want):
        try:
            pair = self._get(slot)
        except StoreError:
            return None
        return pair if digest(*pair) == want else None

    def _state(self):
        if self._st:
            return self._st
        j = self._jget()
        if j is None:  # single-slot layout: files/blobs read one by one, as before rotation
            return [0, NONE, 0, None, b"", None, None, None]
        f = jdecode(j)
        if f is None:
            raise StoreError(
                "slot journal of %s is damaged: run `upcert provision`" % self.location
            )
        a, idle, seq, ha, hi = f
        note = None
        pair = self._try(a, ha)
        if pair is None:
            pair = self._try(1 - a, hi) if idle else None
            if pair is None:
                raise StoreError(
                    "%s: slot %s is damaged and slot %s holds no intact identity: run "
                    "`upcert provision`" % (self.location, SLOTS[a], SLOTS[1 - a])
                )
            note = "slot %s damaged: using slot %s" % (SLOTS[a], SLOTS[1 - a])
            a, idle, ha, hi = 1 - a, NONE, hi, b""
        self._st = [a, idle, seq, ha, hi, pair[0], pair[1], note]
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


def load_roots(path=ROOTS):
    """Trust anchors: the DER certificates concatenated in `path`. StoreError when missing/bad."""
    data = read(path, "trust anchors")
    try:
        from upcert import der
        from upcert.x509 import Certificate

        certs = der.split_certs(data)

        for c in certs:
            Certificate(c)
    except CertificateError as exc:
        raise StoreError(
            "trust anchors %s corrupt (%s): run `upcert provision` to rewrite it" % (path, exc)
        ) from None
    return certs


def __getattr__(name):
    # `from upcert.store import FsStore` keeps working; its code loads only when asked for.
    if name == "FsStore":
        from upcert.store_fs import FsStore

        return FsStore
    raise AttributeError(name)
