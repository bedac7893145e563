# Credential store "partition": two records (slots A, B) in a raw data partition, the newest
# committed one active; and a read-only store over Espressif's esp_secure_cert TLV partition.
# partition: esp32.Partition-like, `readblocks(block, buf, off)`, `writeblocks(block, buf)` (erases
# first), `writeblocks(block, buf, off)` (programs only: bits go 1 -> 0), `ioctl(4|5, 0)` count/size.
import hashlib
import struct
from binascii import crc32

from micropython import const

from upcert.errors import CertificateError, StoreError
from upcert.store import NONE, PREV, SLOTS, STAGED, Store
from upcert.store_slots import SlotStore

# Record: magic, version, seq, cert length, key length | SHA-256 of those 16 bytes + cert + key |
# commit mark (16 bytes, programmed into the erased field by commit()) | cert | key.
_HDR = "<4sB3xIHH"
_MAGIC = b"UPC1"
_MARK = b"upcert-committed"
_SUM = const(16)
_MARK_AT = const(48)
_DATA = const(64)


_TYPE_SECURE_CERT = const(0x3F)  # esp_secure_cert_mgr: ESP_SECURE_CERT_TLV_PARTITION_TYPE


def make(st, atecc=None):
    """The store for config "store" settings st (store.make): kind "partition" (label, default
    upcert) or "esp_secure_cert" (label, default esp_secure_cert; read-only)."""
    import esp32

    data = esp32.Partition.TYPE_DATA
    if st["kind"] == "partition":
        label = st.get("label", "upcert")
        return PartitionStore(_find(esp32, label, (data,)), label)
    label = st.get("label", "esp_secure_cert")
    return SecureCertStore(_find(esp32, label, (_TYPE_SECURE_CERT, data)), label)


def _find(esp32, label, types):
    # The flash partition labelled label of one of types; StoreError when the table lacks it.
    for t in types:
        found = esp32.Partition.find(t, label=label)
        if found:
            return found[0]
    raise StoreError(
        "no partition labelled %r in this board's partition table: flash the custom table "
        "boards/esp32_generic/partitions.csv (see its header), or use store fs or nvs" % label
    )


class PartitionStore(SlotStore):
    """Store over an injected data partition (board.py: esp32.Partition.find(TYPE_DATA,
    label='upcert')). Each slot is half the partition; stage() erases the idle slot and writes a
    record with seq one above the active one, commit() programs its 16-byte commit mark (one
    flash write: the flip). A torn record fails its SHA-256 and is ignored."""

    kind = "partition"

    def __init__(self, partition, label="upcert"):
        self._p = partition
        self.location = "partition:" + label

    def _geo(self):
        bs = self._p.ioctl(5, 0)
        per = self._p.ioctl(4, 0) // 2
        if per < 1:
            raise StoreError("%s is too small: it needs 2 blocks of %d bytes" % (self.location, bs))
        return bs, per

    def _read(self, slot):
        # (seq, committed, cert, key); False for a committed record failing its SHA-256
        # (damage); None for anything else (erased, torn, never committed and damaged).
        bs, per = self._geo()
        hdr = bytearray(_DATA)
        self._p.readblocks(slot * per, hdr)
        magic, ver, seq, lc, lk = struct.unpack_from(_HDR, hdr)
        committed = hdr[_MARK_AT:] == _MARK
        if magic != _MAGIC or ver != 1 or _DATA + lc + lk > per * bs:
            return False if committed else None
        body = bytearray(lc + lk)
        self._p.readblocks(slot * per, body, _DATA)
        h = hashlib.sha256(hdr[:_SUM])
        h.update(body)
        if h.digest() != hdr[_SUM:_MARK_AT]:
            return False if committed else None
        return seq, committed, bytes(body[:lc]), bytes(body[lc:])

    def _state(self):
        if self._st:
            return self._st
        recs = (self._read(0), self._read(1))
        a = None
        for i in (0, 1):
            r = recs[i]
            if r and r[1] and (a is None or r[0] > recs[a][0]):
                a = i
        if a is None:
            raise StoreError(
                "%s holds no committed credentials: run `upcert provision` with store partition"
                % self.location
            )
        o, seq = recs[1 - a], recs[a][0]
        idle = NONE
        note = "slot %s damaged: using slot %s" % (SLOTS[1 - a], SLOTS[a]) if o is False else None
        if o:
            idle = PREV if o[1] else STAGED if o[0] > seq else NONE
        # The shape of SlotStore._state(): certificate(), private_key(), describe() come from it.
        self._st = [a, idle, seq, None, None, recs[a][2], recs[a][3], note]
        return self._st

    def _write(self, slot, seq, cert, key, committed):
        bs, per = self._geo()
        n = _DATA + len(cert) + len(key)
        size = (n + bs - 1) // bs * bs
        if size > per * bs:
            raise StoreError(
                "certificate + key (%d bytes) do not fit a %d-byte slot of %s: make the partition "
                "bigger (boards/esp32_generic/partitions.csv)"
                % (n - _DATA, per * bs - _DATA, self.location)
            )
        hdr = struct.pack(_HDR, _MAGIC, 1, seq, len(cert), len(key))
        h = hashlib.sha256(hdr)
        h.update(cert)
        h.update(key)
        self._st = None
        for i in range(size // bs):  # erase, then program only the record's bytes (less RAM)
            self._p.ioctl(6, slot * per + i)
        self._p.writeblocks(
            slot * per, hdr + h.digest() + (_MARK if committed else b"\xff" * 16) + cert + key, 0
        )
        r = self._read(slot)
        if not r or r[2] != cert or r[3] != key:
            raise StoreError(
                "%s: slot %s does not read back as written (flash worn?); the active identity "
                "is kept" % (self.location, SLOTS[slot])
            )

    def _new(self, cert, key, committed):
        # A record with seq one above the active one, in the idle slot.
        if not cert or not key:
            raise StoreError("refusing to write an empty certificate or key to " + self.location)
        try:
            st = self._state()
            slot, seq = 1 - st[0], st[2] + 1
        except StoreError:
            if not committed:
                raise
            slot, seq = 0, 1  # provisioning an empty (or unreadable) partition
        self._write(slot, seq, cert, key, committed)

    def write(self, cert, key):
        """Provisioning: a committed record in the idle slot (slot A on an empty partition)."""
        self._new(cert, key, True)

    def stage(self, cert, key):
        """Write an uncommitted record to the idle slot and check it reads back."""
        self._new(cert, key, False)

    def staged(self):
        """(cert, key) staged by stage(), or None."""
        st = self._state()
        if st[1] != STAGED:
            return None
        r = self._read(1 - st[0])
        return r[2], r[3]

    def commit(self):
        """Program the staged record's commit mark: it then outranks the active one."""
        st = self._state()
        if st[1] != STAGED:
            raise StoreError("%s: nothing staged to commit: call stage() first" % self.location)
        self._st = None
        self._p.writeblocks((1 - st[0]) * self._geo()[1], _MARK, _MARK_AT)
        if self._state()[0] == st[0]:
            raise StoreError("%s: the commit mark did not stick (flash worn?)" % self.location)

    def discard(self):
        """Erase a staged record, key included (rollback before commit)."""
        st = self._state()
        if st[1] == STAGED:
            self._st = None
            per = self._geo()[1]
            for i in range(per):
                self._p.ioctl(6, (1 - st[0]) * per + i)

    def rollback(self):
        """Re-commit the previous record with a higher seq, if it is still intact."""
        st = self._state()
        r = self._read(1 - st[0]) if st[1] == PREV else None
        if not r:
            raise StoreError("%s: no intact previous identity to roll back to" % self.location)
        self._write(1 - st[0], st[2] + 1, r[2], r[3], True)


# esp_secure_cert TLV (esp_secure_cert_mgr esp_secure_cert_tlv_private.h): header magic u32,
# flags u8, reserved[3], type u8, subtype u8, length u16 (12 bytes) | data | zero pad to 16 |
# footer crc32 (esp_crc32_le(UINT32_MAX, header + data + pad), i.e. zlib.crc32(.., 0xFFFFFFFF)).
_TLV = "<IB3xBBH"
_TLV_MAGIC = const(0xBA5EBA11)
_KEY_SEALED = const(0xC8)  # flags: HMAC-encrypted (bit 7), HMAC-derived (6), ECDSA peripheral (3)


def _der(data, where):
    # The tool stores DER as is and PEM with a trailing NUL.
    data = data.rstrip(b"\0")
    if not data.startswith(b"-----BEGIN "):
        return data
    from upcert import der

    try:
        return der.pem_to_der(data, data[11 : data.find(b"-----", 11)].decode())
    except (CertificateError, UnicodeError) as exc:
        raise StoreError("%s: %s" % (where, exc)) from None


class SecureCertStore(Store):
    """Read-only store over an esp_secure_cert partition (made by esp-secure-cert-tool):
    device certificate TLV type 1, private key type 2 (plaintext only), subtype 0."""

    kind = "esp_secure_cert"

    def __init__(self, partition, label="esp_secure_cert"):
        self._p = partition
        self.location = "partition:" + label

    def _find(self, want):
        # (flags, data) of the first TLV of type `want`, subtype 0; None when absent.
        p, off, hdr = self._p, 0, bytearray(12)
        size = p.ioctl(4, 0) * p.ioctl(5, 0)
        while off + 16 <= size:
            p.readblocks(0, hdr, off)
            magic, flags, t, sub, n = struct.unpack(_TLV, hdr)
            if magic != _TLV_MAGIC:
                return None
            n16 = (n + 15) // 16 * 16
            if t == want and sub == 0:
                body = bytearray(n16 + 4)
                p.readblocks(0, body, off + 12)
                if crc32(body[:n16], crc32(hdr, 0xFFFFFFFF)) != struct.unpack("<I", body[n16:])[0]:
                    raise StoreError(
                        "%s: TLV type %d at offset %d fails its CRC: flash the partition again"
                        % (self.location, t, off)
                    )
                return flags, bytes(body[:n])
            off += 16 + n16
        return None

    def certificate(self):
        """Device certificate DER (TLV type 1; PEM is converted)."""
        r = self._find(1)
        if r is None:
            raise StoreError("%s has no device certificate (TLV type 1)" % self.location)
        return _der(r[1], self.location)

    def private_key(self):
        """Private key DER (TLV type 2); StoreError when absent or sealed in hardware."""
        r = self._find(2)
        if r is None or r[0] & _KEY_SEALED or not r[1]:
            raise StoreError(
                "%s has no plaintext private key (none, or sealed in the DS/ECDSA/HMAC peripheral):"
                " MicroPython's tls needs the key bytes; use store fs, nvs or partition"
                % self.location
            )
        return _der(r[1], self.location)

    def describe(self):
        """Adds read_only: True (rotation is not possible here)."""
        d = Store.describe(self)
        d["read_only"] = True
        return d
