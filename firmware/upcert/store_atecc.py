# Credential store "atecc608": the private key stays in a key slot of an ATECC608 secure element;
# the certificate is on the flash (or in the chip's data slot 8). Slots A/B and the journal are the
# fs store's (store_fs.FsStore over store_slots.SlotStore), holding a key reference
# (b"ATECC608 slot=N sn=<hex>") for a key.
import os
from binascii import hexlify

from micropython import const

from upcert.errors import StoreError
from upcert.store import NONE, read
from upcert.store_fs import FsStore, replace

_FILES = (("cert.der", "key.ref"), ("cert-b.der", "key-b.ref"))
_WHAT = ("device certificate", "ATECC608 key reference")
_REF = b"ATECC608 slot="
_DATA = const(2)  # Read/Write zone "data" (datasheet §9.1.4 Table 9-5; cryptoauthlib ATCA_ZONE_DATA)
_CERT_SLOT = const(8)
_CERT_MAX = const(416)  # data slot 8: 416 bytes, 13 blocks of 32 (datasheet §2.2.2 Table 2-7)


def parse_ref(ref):
    """(key slot, chip serial as 18 hex digits) of a key reference; StoreError when `ref` is
    not b"ATECC608 slot=<0..15> sn=<18 hex digits>"."""
    try:
        head, sn = bytes(ref).split(b" sn=")
        slot = int(head[len(_REF) :]) if head.startswith(_REF) else -1
        sn = sn.decode()
        if not 0 <= slot < 16 or len(sn) != 18:
            raise ValueError
        int(sn, 16)
    except (ValueError, TypeError):
        raise StoreError(
            "%r is not an ATECC608 key reference (ATECC608 slot=N sn=<serial>): run "
            "`upcert provision --store atecc608`" % (bytes(ref[:48]),)
        ) from None
    return slot, sn.lower()


def make(st, atecc):
    """The store for config "store" settings st (store.make), its chip atecc(st) (the board's
    driver on its bus): slot, spares, root, cert."""
    return AteccStore(atecc(st), st.get("slot", 0), st.get("spares", (2, 3, 4)),
                      st.get("root", "/upcert.d"), st.get("cert", "fs"))


class AteccStore(FsStore):
    """Store whose private key never leaves an ATECC608 (chip: upcert.atecc.ATECC, injected).

    private_key() is None, so the built-in tls refuses this store (TLS with a key in the chip
    needs upcert's own TLS client); signer() signs with the active key slot. Rotation: new_key()
    makes a key in an idle key slot, stage(cert, key_ref) and commit() flip slots A/B as the fs
    store does; a reference made on another chip (a swapped chip) raises StoreError.
    slot: key slot of the provisioned identity; spares: key slots rotation may use; cert: "fs"
    (files under root) or "slot8" (slot A's certificate in data slot 8, slot B's on the flash)."""

    kind = "atecc608"

    def __init__(self, chip, slot=0, spares=(2, 3, 4), root="/upcert.d", cert="fs"):
        FsStore.__init__(self, root)
        self.chip = chip
        self.slot = slot
        self.spares = tuple(spares)
        self.cert_in = cert
        self._key = root + "/key.ref"
        self._j = root + "/chip-slots.bin"  # not slots.bin: never mixed up with store "fs"
        self._sn = None
        addr = getattr(chip, "addr", None)
        self.location = root if addr is None else "%s + ATECC608 0x%02x" % (root, addr)

    # -- the chip ---------------------------------------------------------------------------

    def serial(self):
        """The chip's serial number as 18 lowercase hex digits (read once)."""
        if self._sn is None:
            self._sn = hexlify(self.chip.serial()).decode()
        return self._sn

    def ref(self, slot):
        """Key reference bytes naming key slot `slot` of this chip (what stage/write take)."""
        return b"ATECC608 slot=%d sn=%s" % (slot, self.serial())

    def _check(self, ref):
        # The key slot a reference names, after checking it was made on this very chip.
        slot, sn = parse_ref(ref)
        if sn != self.serial():
            raise StoreError(
                "%s: the identity was made on ATECC608 %s but this board's chip is %s (chip "
                "swapped, or the flash came from another board): run `upcert provision --store "
                "atecc608` for this chip" % (self.location, sn, self.serial())
            )
        return slot

    # -- the Store interface --------------------------------------------------------------------

    def key_ref(self):
        """Key reference of the active identity (StoreError when missing or damaged)."""
        return self._item(1)

    def key_slot(self):
        """Key slot of the active identity, checked against this chip's serial number."""
        return self._check(self.key_ref())

    def private_key(self):
        """None: the key never leaves the chip. Checks first that the active identity belongs to
        this chip (StoreError otherwise), so a swapped chip is reported at boot."""
        self.key_slot()
        return None

    def signer(self, key_ref=None):
        """upcert.atecc.Signer over the active key slot (or over key_ref's, e.g. a staged
        identity's for its trial connection): sign_digest(digest32) -> (r, s), ecdhe(point),
        public_point() -> 65 bytes 04||X||Y."""
        from upcert.atecc import Signer

        return Signer(self.chip, self.key_slot() if key_ref is None else self._check(key_ref))

    def write(self, cert, key_ref):
        """Provisioning: make (cert DER, key reference of this chip) the active identity."""
        self._check(key_ref)
        FsStore.write(self, cert, key_ref)

    def stage(self, cert, key_ref):
        """Rotation: put (cert, key reference from new_key()) in the idle slot A/B."""
        self._check(key_ref)
        FsStore.stage(self, cert, key_ref)

    def new_key(self):
        """Rotation: a new private key (GenKey) in a spare key slot that no identity uses (the
        active one and a staged or rollback one stay intact). Returns (signer, key reference)."""
        from upcert.atecc import Signer

        try:
            busy = [self.key_slot(), self._idle_slot()]
        except StoreError:  # no identity yet: provisioning by claim (claim.py)
            busy = [self._idle_slot()]
        cfg = self.chip.read_config()
        for n in self.spares + (self.slot,):
            c = self.chip.slot_config(n, cfg)
            if n not in busy and c["genkey"] and not c["locked"]:
                self.chip.genkey(n)
                return Signer(self.chip, n), self.ref(n)
        raise StoreError(
            "%s: no spare key slot where GenKey is allowed (spares %s, in use %s): check the "
            "chip's slot configuration and store 'spares'" % (self.location, self.spares, busy)
        )

    def _idle_slot(self):
        # Key slot of the staged or rollback identity in the idle slot A/B; None without one.
        st = self._state()
        if st[1] != NONE:
            try:
                return parse_ref(self._get1(1 - st[0], 1))[0]
            except StoreError:
                pass  # the idle slot is damaged: nothing there to keep
        return None

    def describe(self):
        """Slot A/B state plus the chip: serial, revision, address, lock state, active key slot
        (key_slot), the idle identity's key slot (idle_key_slot: staged or rollback target, or
        None), spare key slots; 'error' names what could not be read."""
        d = FsStore.describe(self)
        d["cert_in"] = self.cert_in
        try:
            c = self.chip
            d["serial"] = self.serial()
            d["revision"] = hexlify(c.info()).decode()
            d["address"] = "0x%02x" % getattr(c, "addr", 0)
            d["config_locked"], d["data_locked"] = c.locked()
            slot = self.key_slot()
            d["key_slot"] = slot
            d["idle_key_slot"] = self._idle_slot()  # staged, or the rollback target
            d["spare_slots"] = [n for n in self.spares + (self.slot,) if n != slot]
        except Exception as e:  # AteccError, StoreError, OSError: shown, never fatal here
            d.setdefault("error", str(e))
        return d

    # -- the slot files (FsStore's, with key references) and data slot 8 -------------------

    def _get1(self, slot, i):
        if slot == 0:
            if not i and self.cert_in == "slot8":
                return self._cert8()
            self._recover()
        return read(self.root + "/" + _FILES[slot][i], _WHAT[i])

    def _put(self, slot, cert, key):
        try:
            for i, data in enumerate((cert, key)):
                if not (slot or i) and self.cert_in == "slot8":
                    self._put8(cert)
                    continue
                with open(self.root + "/" + _FILES[slot][i], "wb") as f:
                    f.write(data)
        except OSError as exc:
            raise StoreError(
                "writing slot %s in %s failed (%s)" % ("AB"[slot], self.root, exc)
            ) from None

    def _wipe(self, slot):
        # Slot `slot` is named by the journal no more (a discarded stage): drop its files. A
        # certificate in data slot 8 stays (it is public); the key in the chip stays until the
        # next GenKey there.
        for i in (0, 1):
            if slot or i or self.cert_in != "slot8":
                try:
                    os.remove(self.root + "/" + _FILES[slot][i])
                except OSError:
                    pass  # not there

    def _write1(self, cert, key):
        # The single-slot write. With "slot8": the chip's slot 8, then key.ref by rename.
        if self.cert_in != "slot8":
            return FsStore._write1(self, cert, key)
        self._recover()
        try:
            os.mkdir(self.root)
        except OSError:
            pass  # already there
        self._put8(cert)
        with open(self._key + ".tmp", "wb") as f:
            f.write(key)
        replace(self._key + ".tmp", self._key)

    def _cert8(self):
        # DER from data slot 8: the first block gives the length (a SEQUENCE, long form).
        b = bytes(self.chip.read(_DATA, _CERT_SLOT, 0, 0, 32))
        n = 0
        if b[0] == 0x30:
            n = 2 + b[1] if b[1] < 0x80 else 3 + b[2] if b[1] == 0x81 else 0
            if b[1] == 0x82:
                n = 4 + (b[2] << 8 | b[3])
        if not 2 < n <= _CERT_MAX:
            raise StoreError(
                "device certificate in ATECC608 data slot 8 missing or damaged: run "
                "`upcert provision --store atecc608`"
            )
        out = bytearray(b)
        for blk in range(1, (n + 31) // 32):
            out += self.chip.read(_DATA, _CERT_SLOT, blk, 0, 32)
        return bytes(out[:n])

    def _put8(self, cert):
        if len(cert) > _CERT_MAX:
            raise StoreError(
                "the certificate (%d bytes) does not fit ATECC608 data slot 8 (%d bytes): use "
                'store "cert": "fs"' % (len(cert), _CERT_MAX)
            )
        buf = bytearray((len(cert) + 31) // 32 * 32)
        buf[: len(cert)] = cert
        for blk in range(len(buf) // 32):
            self.chip.write(_DATA, _CERT_SLOT, blk, 0, buf[blk * 32 : blk * 32 + 32])
