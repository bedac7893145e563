# Credential store "nvs": slot A is blobs `cert`/`key` (the single-slot layout), slot B `cert_b`/
# `key_b`, and blob `slots` the journal naming the active slot (store_slots.SlotStore).
# nvs: esp32.NVS-like, `get_blob(key, buf) -> len`, `set_blob(key, buf)`, `erase_key(key)`, `commit()`.
from micropython import const

from upcert.errors import StoreError
from upcert.store import WHAT
from upcert.store_slots import SlotStore

# ESP-IDF codes, raised by MicroPython's check_esp_err() as OSError(-code) (ports/esp32/esp32_nvs.c).
_NOT_FOUND = const(-4354)  # ESP_ERR_NVS_NOT_FOUND (0x1102)
_TOO_SMALL = const(-4364)  # ESP_ERR_NVS_INVALID_LENGTH (0x110c): buffer shorter than the blob
_FIRST = const(2048)
_MAX = const(16384)  # the stock nvs partition is 24 KiB, shared with Wi-Fi
_KEYS = (("cert", "key"), ("cert_b", "key_b"))
_JOURNAL = "slots"


def _code(exc):
    return exc.args[0] if exc.args else None


def make(st, atecc=None):
    """The store for config "store" settings st (store.make): namespace, default upcert."""
    import esp32

    ns = st.get("namespace", "upcert")
    return NvsStore(esp32.NVS(ns), ns)


class NvsStore(SlotStore):
    """Store over an injected NVS namespace handle (board.py passes esp32.NVS('upcert')).

    The journal is one blob set and then committed: ESP-IDF writes a single key atomically
    (the old value stays valid until the new one is complete), so that is the flip."""

    kind = "nvs"

    def __init__(self, nvs, namespace="upcert"):
        self._nvs = nvs
        self.namespace = namespace
        self.location = "nvs:" + namespace

    def _blob(self, key, what):
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
                    if what is None:
                        return None
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
            if not n and what:
                raise StoreError(
                    "nvs namespace '%s': '%s' blob is empty: run upcert provision --store nvs"
                    % (self.namespace, key)
                )
            return bytes(buf[:n])

    def _set(self, *items):
        try:
            for key, value in items:
                self._nvs.set_blob(key, value)
            self._nvs.commit()
        except OSError as exc:
            raise StoreError(
                "nvs namespace '%s': write failed (%r); is the nvs partition full?"
                % (self.namespace, exc)
            ) from None

    def _get1(self, slot, i):
        return self._blob(_KEYS[slot][i], WHAT[i])

    def _put(self, slot, cert, key):
        self._set((_KEYS[slot][0], cert), (_KEYS[slot][1], key))

    def _erase(self, *keys):
        # erase_key marks the entries erased (ESP-IDF reclaims the page later); absent is fine.
        for key in keys:
            try:
                self._nvs.erase_key(key)
            except OSError:
                pass
        self._nvs.commit()

    def _wipe(self, slot):
        self._erase(*_KEYS[slot])

    def _jget(self):
        return self._blob(_JOURNAL, None)

    def _jput(self, data):
        self._set((_JOURNAL, data))

    def _forget(self):
        self._erase(_JOURNAL)

    def _write1(self, cert_der, key_der):
        # Set both blobs, then one commit(): only it makes them sure to survive a power cut.
        self._put(0, cert_der, key_der)
