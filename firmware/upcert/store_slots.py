# The writing side of store.SlotStore (stores fs and nvs): write, stage, staged, commit, discard
# and rollback, and the file writes of store "fs", called as methods of the store. Loaded on first
# use, so a board that only reads its identity keeps this code out of RAM. Every change ends in
# one journal write (s._jput).
import hashlib
import os
import struct

from upcert.errors import StoreError
from upcert.store import JFMT, JMAGIC, NONE, PREV, SLOTS, STAGED, TRIAL, digest


def _check(cert, key, where):
    if not cert or not key:
        raise StoreError("refusing to write an empty certificate or key to " + where)


def _journal(s, a, idle, seq, ha, hi):
    body = struct.pack(JFMT, JMAGIC, a, idle, seq, ha, hi)
    s._st = None
    s._jput(body + hashlib.sha256(body).digest()[:4])


def stage(s, cert, key):
    """Write the pair to the idle slot and check it reads back (SHA-256); the active slot stays
    active. StoreError when it does not read back."""
    _check(cert, key, s.location)
    st = s._state()
    ha = st[3] or digest(*s._get(0))
    idle, h = 1 - st[0], digest(cert, key)
    s._st = None
    s._put(idle, cert, key)
    if s._try(idle, h) is None:
        raise StoreError(
            "%s: slot %s does not read back as written (flash worn or full?); the active "
            "identity is kept" % (s.location, SLOTS[idle])
        )
    _journal(s, st[0], STAGED, st[2], ha, h)


def staged(s):
    """(cert, key) staged by stage(), or None."""
    st = s._state()
    return s._try(1 - st[0], st[4]) if st[1] == STAGED else None


def _flip(s, need, why, then):
    # The idle slot becomes active, the active one the rollback target (idle state `then`): one
    # journal write.
    st = s._state()
    if st[1] not in need or s._try(1 - st[0], st[4]) is None:
        raise StoreError("%s: %s" % (s.location, why))
    _journal(s, 1 - st[0], then, st[2] + 1, st[4], st[3])


def commit(s):
    """Make the staged slot active in one atomic journal write; the old one is kept idle as the
    rollback target, and the new one is on trial until proven() (the watch survives a reboot)."""
    _flip(s, (STAGED,), "nothing staged to commit: call stage() first", TRIAL)


def rollback(s):
    """After commit(), make the previous slot active again if it is still intact."""
    _flip(s, (PREV, TRIAL), "no intact previous identity to roll back to", PREV)


def trial(s):
    """The previous identity's certificate (DER) while the active one, committed, is not proven
    yet; None otherwise."""
    st = s._state()
    if st[1] != TRIAL:
        return None
    pair = s._try(1 - st[0], st[4])
    return pair[0] if pair else None


def proven(s):
    """The active identity has worked (the broker acknowledged its telemetry): no rollback watch
    any more (one journal write, only while it was on trial)."""
    st = s._state()
    if st[1] == TRIAL:
        _journal(s, st[0], PREV, st[2], st[3], st[4])


def discard(s):
    """Forget a staged pair (rollback before commit), then erase it: its key must not linger."""
    st = s._state()
    if st[1] == STAGED:
        _journal(s, st[0], NONE, st[2], st[3], b"")
        s._wipe(1 - st[0])


def write(s, cert, key):
    """Provisioning: make (cert, key) the active identity. The single-slot layout is rewritten
    in place (crash-safe); a slotted store stages and commits; a damaged one starts again from
    the single-slot layout."""
    _check(cert, key, s.location)
    try:
        slotted = s._state()[3] is not None
    except StoreError:
        slotted = None
    s._st = None
    if slotted:
        stage(s, cert, key)
        _flip(s, (STAGED,), "", PREV)  # provisioned on purpose: no trial, nothing to watch
    else:
        s._write1(cert, key)
        if slotted is None:
            s._forget()


# -- store "fs" (store_fs.FsStore): the slot files, the journal, the single-slot layout ----------


def fs_put(s, slot, cert, key):
    """Write slot `slot`'s files in place (the journal does not name them yet)."""
    from upcert.store_fs import FILES

    try:
        for i, data in enumerate((cert, key)):
            with open(s.root + "/" + FILES[slot][i], "wb") as f:
                f.write(data)
    except OSError as exc:
        fs_wipe(s, slot)  # a full flash leaves no half-written or empty slot file behind
        raise StoreError("writing slot %s in %s failed (%s)" % (SLOTS[slot], s.root, exc)) from None


def fs_jput(s, data):
    """Replace the journal: write journal.tmp, then rename it over the journal (atomic)."""
    from upcert.store_fs import replace

    with open(s._j + ".tmp", "wb") as f:
        f.write(data)
    replace(s._j + ".tmp", s._j)


def fs_wipe(s, slot):
    """Remove slot `slot`'s files (the journal names them no more). littlefs is copy-on-write: it
    frees their blocks, whose bytes stay on the flash until reused; nothing here can erase them
    in place (README, "Keys on the flash")."""
    from upcert.store_fs import FILES

    for name in FILES[slot]:
        try:
            os.remove(s.root + "/" + name)
        except OSError:
            pass  # not there


def fs_forget(s):
    """Drop the journal: back to the single-slot layout."""
    from upcert.store_fs import exists

    for p in (s._j, s._j + ".tmp"):
        if exists(p):
            os.remove(p)


def fs_write1(s, cert_der, key_der):
    """The single-slot write: both *.tmp files, then rename cert, then key (see FsStore)."""
    from upcert.store_fs import replace

    s._recover()
    try:
        os.mkdir(s.root)
    except OSError:
        pass  # already there
    try:
        for path, data in ((s._cert, cert_der), (s._key, key_der)):
            with open(path + ".tmp", "wb") as f:
                f.write(data)
    except OSError as exc:
        for p in (s._cert + ".tmp", s._key + ".tmp"):  # no empty or torn .tmp left behind
            try:
                os.remove(p)
            except OSError:
                pass
        raise StoreError("writing %s.tmp failed (%s): old credentials kept" % (path, exc)) from None
    replace(s._cert + ".tmp", s._cert)
    replace(s._key + ".tmp", s._key)
