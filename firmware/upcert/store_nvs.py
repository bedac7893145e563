# Credential store "nvs": certificate and key as blobs `cert` and `key` in an ESP32 NVS namespace.
# nvs: esp32.NVS-like, `get_blob(key, buf) -> len`, `set_blob(key, buf)`, `erase_key(key)`, `commit()`.
from micropython import const

from upcert.errors import StoreError
from upcert.store import Store

# ESP-IDF codes, raised by MicroPython's check_esp_err() as OSError(-code) (ports/esp32/esp32_nvs.c).
_NOT_FOUND = const(-4354)  # ESP_ERR_NVS_NOT_FOUND (0x1102)
_TOO_SMALL = const(-4364)  # ESP_ERR_NVS_INVALID_LENGTH (0x110c): buffer shorter than the blob
_FIRST = const(2048)
_MAX = const(16384)  # the stock nvs partition is 24 KiB, shared with Wi-Fi


def _code(exc):
    return exc.args[0] if exc.args else None


class NvsStore(Store):
    """Store over an injected NVS namespace handle (board.py passes esp32.NVS('upcert'))."""

    kind = "nvs"

    def __init__(self, nvs, namespace="upcert"):
        self._nvs = nvs
        self.namespace = namespace
        self.location = "nvs:" + namespace

    def _get(self, key, what):
        # The port raises on a short buffer without saying the size (it drops the length
        # nvs_get_blob reports), so start at _FIRST and double until the blob fits.
        size = _FIRST
        while True:
            buf = bytearray(size)
            try:
                n = self._nvs.get_blob(key, buf)
            except OSError as exc:
                code = _code(exc)
                if code == _NOT_FOUND:
                    raise StoreError(
                        "nvs namespace '%s' has no '%s' blob (%s): run upcert provision --store nvs"
                        % (self.namespace, key, what)
                    ) from None
                if code == _TOO_SMALL and size < _MAX:
                    size *= 2
                    continue
                raise StoreError(
                    "nvs namespace '%s': reading '%s' failed (%r)" % (self.namespace, key, exc)
                ) from None
            if not n:
                raise StoreError(
                    "nvs namespace '%s': '%s' blob is empty: run upcert provision --store nvs"
                    % (self.namespace, key)
                )
            return bytes(buf[:n])

    def certificate(self):
        """Device certificate DER from blob 'cert'."""
        return self._get("cert", "device certificate")

    def private_key(self):
        """Private key DER from blob 'key'."""
        return self._get("key", "private key")

    def write(self, cert_der, key_der):
        """Set both blobs, then one commit() (uncommitted changes are lost at reset)."""
        if not cert_der or not key_der:
            raise StoreError(
                "refusing to write an empty certificate or key to nvs '%s'" % self.namespace
            )
        try:
            self._nvs.set_blob("cert", cert_der)
            self._nvs.set_blob("key", key_der)
            self._nvs.commit()
        except OSError as exc:
            raise StoreError(
                "nvs namespace '%s': write failed (%r); is the nvs partition full?"
                % (self.namespace, exc)
            ) from None
