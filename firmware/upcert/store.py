# Credential stores, the interface (docs/ARCHITECTURE.md "store"): the constants and helpers all
# stores share, the base class Store and the trust anchors file. Imports go one way: the stores
# (store_slots, store_fs, store_nvs, store_part, store_atecc) and the slot journal
# (store_journal) import this module, never the reverse; make() loads the one a config names.
from micropython import const

from upcert.errors import CertificateError, ConfigError, StoreError

ROOTS = "/upcert.d/roots.der"
SLOTS = "AB"
WHAT = ("device certificate", "private key")
# The idle slot's state (the journal's, store_journal.py; store_part.py reports the same).
NONE = const(0)  # nothing useful
PREV = const(1)  # the identity before the last commit (rollback target)
STAGED = const(2)  # staged by stage(), not committed yet
# the identity before the last commit, and the active one is not proven yet (no telemetry
# acknowledged): the rollback watch outlives a reboot. proven() turns it into PREV.
TRIAL = const(3)


def make(config, atecc=None):
    """The credential store named by config['store']['kind']: 'fs' (root), 'nvs' (namespace),
    'partition' (label, default 'upcert'), 'esp_secure_cert' (label; read-only) or 'atecc608'
    (address, slot, spares, sda, scl, cert 'fs'|'slot8'; the key stays in the chip), made by
    make(st, atecc) of its module (store_fs, store_nvs, store_part, store_atecc) on the ESP32
    port's APIs; atecc(st) -> the board's ATECC608 driver. Only that module is loaded: the
    others' code and names never reach RAM."""
    st = config.get("store") or {"kind": "fs"}
    kind = st.get("kind", "fs")
    m = {"fs": "fs", "nvs": "nvs", "partition": "part", "esp_secure_cert": "part",
         "atecc608": "atecc"}.get(kind)
    if not m:
        raise ConfigError("config: store kind %r unknown: use one of fs, nvs, partition, "
                          "esp_secure_cert, atecc608" % kind)
    __import__("upcert.store_" + m)
    import sys

    return sys.modules["upcert.store_" + m].make(st, atecc)


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


class Store:
    """Base of the credential stores. Subclasses set `kind` and `location` and implement
    certificate() -> DER, private_key() -> DER (or None when a secure element holds the key),
    write(cert_der, key_der); signer() returns None or an object with sign_digest(digest32).
    Rotation: stage(cert, key), staged(), commit(), discard(), rollback(), trial(), proven()
    (store_slots.SlotStore and store_part.PartitionStore); on this base they refuse, as for a
    read-only identity. Missing or corrupt data raises StoreError naming what and where."""

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


def load_roots(path=ROOTS):
    """Trust anchors: the DER certificates concatenated in `path`. StoreError when missing/bad."""
    data = read(path, "trust anchors")
    try:
        from upcert.certlean import split

        certs = split(data)
    except CertificateError as exc:
        raise StoreError(
            "trust anchors %s corrupt (%s): run `upcert provision` to rewrite it" % (path, exc)
        ) from None
    return certs
