# Credential stores: the Store interface (docs/ARCHITECTURE.md "store"), store "fs" (DER files on
# the board's flash) and the trust anchors file. Store "nvs" is in store_nvs.py.
import os

from upcert import der
from upcert.errors import CertificateError, StoreError

ROOTS = "/upcert.d/roots.der"
_CERT = "cert.der"
_KEY = "key.der"


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _read(path, what):
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


def _replace(src, dst):
    # littlefs (and POSIX) rename replaces dst atomically; FAT refuses an existing dst.
    try:
        os.rename(src, dst)
    except OSError:
        if not (_exists(src) and _exists(dst)):
            raise
        os.remove(dst)
        os.rename(src, dst)


class Store:
    """Base of the credential stores. Subclasses set `kind` and `location` and implement
    certificate() -> DER, private_key() -> DER (or None when a secure element holds the key),
    write(cert_der, key_der); signer() returns None or an object with sign_digest(digest32).
    Missing or corrupt data raises StoreError naming what is missing and where."""

    kind = "?"
    location = "?"

    def signer(self):
        """None: the private key is in private_key(), not in a secure element."""
        return None

    def describe(self):
        """{'kind': ..., 'location': ...} for status reports."""
        return {"kind": self.kind, "location": self.location}


class FsStore(Store):
    """Certificate and PKCS#8 key as `<root>/cert.der` and `<root>/key.der`.

    write() writes both `*.tmp` files, then renames cert, then key. A power cut leaves either the
    old pair, the new pair, or new cert + complete key.der.tmp, which the next access finishes.
    """

    kind = "fs"

    def __init__(self, root="/upcert.d"):
        self.root = self.location = root
        self._cert = root + "/" + _CERT
        self._key = root + "/" + _KEY

    def _recover(self):
        # Only key.tmp left means the cert was already renamed (both tmps were complete): roll
        # forward. Any other leftover tmp is from an interrupted write: the old pair stands.
        ct, kt = self._cert + ".tmp", self._key + ".tmp"
        c, k = _exists(ct), _exists(kt)
        if k and not c:
            _replace(kt, self._key)
        elif c or k:
            for p in (ct, kt):
                if _exists(p):
                    os.remove(p)

    def certificate(self):
        """Device certificate DER; StoreError when missing or empty."""
        self._recover()
        return _read(self._cert, "device certificate")

    def private_key(self):
        """Private key DER (PKCS#8); StoreError when missing or empty."""
        self._recover()
        return _read(self._key, "private key")

    def write(self, cert_der, key_der):
        """Replace certificate and key (crash-safe per file, and recovered as a pair)."""
        if not cert_der or not key_der:
            raise StoreError("refusing to write an empty certificate or key to " + self.root)
        self._recover()
        try:
            os.mkdir(self.root)
        except OSError:
            pass  # already there
        try:
            for path, data in ((self._cert, cert_der), (self._key, key_der)):
                with open(path + ".tmp", "wb") as f:
                    f.write(data)
        except OSError as exc:
            raise StoreError(
                "writing %s.tmp failed (%s): old credentials kept" % (path, exc)
            ) from None
        _replace(self._cert + ".tmp", self._cert)
        _replace(self._key + ".tmp", self._key)


def load_roots(path=ROOTS):
    """Trust anchors: the DER certificates concatenated in `path`. StoreError when missing/bad."""
    data = _read(path, "trust anchors")
    try:
        certs = der.split_certs(data)
        from upcert.x509 import Certificate

        for c in certs:
            Certificate(c)
    except CertificateError as exc:
        raise StoreError(
            "trust anchors %s corrupt (%s): run `upcert provision` to rewrite it" % (path, exc)
        ) from None
    return certs
