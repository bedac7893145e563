# ATECC608 driver, second half: the CRC-16, argument checks, the crypto commands (a mixin whose
# bus access is ATECC._run in atecc.py) and Signer, the chip-backed signer for upcert.csr.
# Sources as atecc.py: the ATECC608A/B data sheet, cryptoauthlib lib/calib.
from micropython import const

# Opcodes (cryptoauthlib calib_command.h); names and execution times live in atecc._OPS.
_NONCE = const(0x16)
_RANDOM = const(0x1B)
_GENKEY = const(0x40)
_SIGN = const(0x41)
_ECDH = const(0x43)
_VERIFY = const(0x45)
_SHA = const(0x47)


def crc16(data, crc=0, start=0, end=None):
    """CRC-16 of data[start:end] continuing from crc, as the ATECC608 computes it: poly 0x8005,
    init 0, each byte fed LSB first, no final XOR (cryptoauthlib atCRC, calib_command.c). Sent little-endian."""
    for i in range(start, len(data) if end is None else end):
        b = data[i]
        for _ in range(8):
            if (crc >> 15 ^ b) & 1:
                crc = (crc << 1 ^ 0x8005) & 0xFFFF
            else:
                crc = crc << 1 & 0xFFFF
            b >>= 1
    return crc


def check_len(data, n, what):
    """ValueError unless data (bytes-like) has length n."""
    if len(data) != n:
        raise ValueError("%s must be %d bytes" % (what, n))


def check_slot(slot):
    """ValueError unless slot is an int 0..15."""
    if slot not in range(16):
        raise ValueError("slot must be an int 0..15, got %r" % (slot,))


class Crypto:
    """The crypto commands of upcert.atecc.ATECC (which supplies _run: wake, commands, idle)."""

    def random(self):
        """32 random bytes (Random mode 0; FF FF 00 00 .. until the config zone is locked)."""
        return self._run((_RANDOM, 0, 0, b"", 35))[0]

    def nonce_passthrough(self, data32):
        """Load 32 bytes into TempKey (Nonce mode 0x03)."""
        check_len(data32, 32, "nonce data")
        self._run((_NONCE, 0x03, 0, data32, 4))

    def genkey(self, slot):
        """Make a new private key in slot (GenKey mode 0x04); returns its public key X||Y."""
        check_slot(slot)
        return self._run((_GENKEY, 0x04, slot, b"", 67))[0]

    def public_key(self, slot):
        """The public key X||Y (64 bytes) of the private key in slot (GenKey mode 0x00)."""
        check_slot(slot)
        return self._run((_GENKEY, 0x00, slot, b"", 67))[0]

    def sign_digest(self, slot, digest32):
        """ECDSA signature R||S (64 bytes, big-endian) of a 32-byte digest with slot's key:
        Nonce pass-through of the digest into TempKey, then Sign mode 0x80 (external)."""
        check_slot(slot)
        check_len(digest32, 32, "digest")
        return self._run((_NONCE, 0x03, 0, digest32, 4), (_SIGN, 0x80, slot, b"", 67))[1]

    def verify_extern(self, digest32, sig64, pub64):
        """True if sig64 (R||S) signs digest32 under the P-256 public key pub64 (X||Y): Verify
        mode 0x02 (external), key type 0x0004 (P-256). False on a miscompare (status 0x01)."""
        check_len(digest32, 32, "digest")
        check_len(sig64, 64, "signature R||S")
        check_len(pub64, 64, "public key X||Y")
        data = bytes(sig64) + bytes(pub64)
        return not self._run((_NONCE, 0x03, 0, digest32, 4), (_VERIFY, 0x02, 4, data, 4))[1]

    def ecdh(self, slot, pub64):
        """ECDH shared secret (32 bytes, X of d*Q) of slot's key and pub64, output in clear
        (mode 0x0C); the slot needs SlotConfig ECDH allowed."""
        check_slot(slot)
        check_len(pub64, 64, "public key X||Y")
        return self._run((_ECDH, 0x0C, slot, pub64, 35))[0]

    def ecdh_ephemeral(self, pub64):
        """[our public key X||Y, shared secret]: a key made in TempKey (GenKey 0x04, slot
        0xFFFF) then ECDH from TempKey (mode 0x0D), in one wake so TempKey is kept."""
        check_len(pub64, 64, "public key X||Y")
        return self._run((_GENKEY, 0x04, 0xFFFF, b"", 67), (_ECDH, 0x0D, 0, pub64, 35))

    def sha256(self, data):
        """SHA-256 computed by the chip (SHA start, 64-byte updates, end). At most 1024 bytes,
        so the sequence ends well within the watchdog; use hashlib for more."""
        n = len(data)
        if n > 1024:
            raise ValueError("chip sha256: at most 1024 bytes")
        mv = memoryview(data)
        steps = [(_SHA, 0, 0, b"", 4)]
        for i in range(0, n - 63, 64):
            steps.append((_SHA, 1, 64, mv[i : i + 64], 4))
        steps.append((_SHA, 2, n & 63, mv[n & ~63 :], 35))
        return self._run(*steps)[-1]


class Signer:
    """A P-256 signer whose private key stays in chip slot `slot`: what upcert.csr.build (and
    the store interface) expect, like upcert.p256.Key. No I/O until used."""

    def __init__(self, chip, slot=0):
        self.chip = chip
        self.slot = slot
        self._q = None

    def public_point(self):
        """The slot's public key as 65 bytes 04||X||Y (read once, then cached)."""
        if self._q is None:
            self._q = b"\x04" + self.chip.public_key(self.slot)
        return self._q

    def ecdhe(self, peer65):
        """Ephemeral ECDH inside the chip (GenKey into TempKey, then ECDH from it, one wake):
        (our public point 65 bytes, the shared secret 32 bytes); the private key never leaves."""
        if len(peer65) != 65 or peer65[0] != 4:
            raise ValueError("peer point must be 65 bytes 04||X||Y")
        pub, shared = self.chip.ecdh_ephemeral(peer65[1:])
        return b"\x04" + pub, shared

    def sign_digest(self, digest32):
        """ECDSA (r, s) of a 32-byte SHA-256 digest, computed inside the chip."""
        sig = self.chip.sign_digest(self.slot, digest32)
        return int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
