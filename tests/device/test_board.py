# Device tests for boards/esp32_generic/board.py with stand-ins for the ESP32-only modules
# (network and ntptime injected into sys.modules here; esp32 from fakes/esp32.py).
import os
import sys

import esp32
from checks import eq, raises, true
from upcert.errors import ConfigError, ConnectError, UpcertError

sys.path.insert(0, os.getcwd() + "/boards/esp32_generic")  # runner's cwd is the repo root
import board  # noqa: E402


class _WLAN:
    connect_after = 0  # isconnected() polls before the link is up; None = never

    def __init__(self, iface):
        self.iface, self.polls, self.connected_to, self.is_active = iface, 0, None, False

    def active(self, on=None):
        if on is not None:
            self.is_active = on
        return self.is_active

    def connect(self, ssid, password):
        self.connected_to = (ssid, password)

    def isconnected(self):
        if self.connected_to is None or _WLAN.connect_after is None:
            return _Net.up
        self.polls += 1
        return self.polls > _WLAN.connect_after

    def status(self):
        return _Net.STAT_WRONG_PASSWORD

    def disconnect(self):
        self.connected_to = None


class _Net:
    STA_IF = 0
    STAT_WRONG_PASSWORD = 202
    up = False
    made = []

    @staticmethod
    def WLAN(iface):
        w = _WLAN(iface)
        _Net.made.append(w)
        return w


class _Ntp:
    calls = 0

    @staticmethod
    def settime():
        _Ntp.calls += 1


sys.modules["network"] = _Net
sys.modules["ntptime"] = _Ntp


def test_name():
    eq(board.NAME, "esp32-generic", "NAME")


def test_network_up_connects_with_config():
    _Net.up, _WLAN.connect_after = False, 3
    w = board.network_up({"wifi": {"ssid": "lab", "password": "pw"}}, timeout_ms=2000)
    eq(w.connected_to, ("lab", "pw"), "connect args")
    eq(w.iface, _Net.STA_IF, "station interface")
    true(w.is_active, "activated")


def test_network_up_timeout_names_ssid():
    _Net.up, _WLAN.connect_after = False, None
    raises(
        ConnectError,
        board.network_up,
        {"wifi": {"ssid": "lab", "password": "bad"}},
        300,
        contains=("wifi 'lab': not connected after 300 ms", "STAT_WRONG_PASSWORD"),
    )
    true(issubclass(ConnectError, UpcertError), "UpcertError subclass")


def test_network_up_without_wifi_config():
    _Net.up = True
    w = board.network_up({})
    eq(w.connected_to, None, "already connected: nothing done")
    _Net.up = False
    raises(ConnectError, board.network_up, {}, contains="no network")


def test_clock_syncs_by_ntp():
    c = board.clock()
    _Ntp.calls = 0
    c.sync()
    eq(_Ntp.calls, 1, "ntptime.settime called")


def test_store_kinds():
    eq(
        board.store({"store": {"kind": "fs"}}).describe(),
        {"kind": "fs", "location": "/upcert.d"},
        "fs",
    )
    eq(board.store({}).kind, "fs", "default fs")
    esp32.reset()
    s = board.store({"store": {"kind": "nvs"}})
    eq(s.describe(), {"kind": "nvs", "location": "nvs:upcert"}, "nvs")
    raises(
        ConfigError,
        board.store,
        {"store": {"kind": "tpm"}},
        contains="store kind 'tpm' unknown: use one of fs, nvs",
    )


def test_heap_room_leaves_the_trial_connection_its_idf_memory():
    # gc.mem_free() on the ESP32 already counts the largest free IDF block; mbedTLS needs up to
    # 32 KB of it for a second connection, so heap_room() does not count that part.
    import gc

    try:
        for regions, less in (
            ([(79912, 60000, 58000, 50000), (15072, 15036, 15036, 15036)], 32768),
            ([(79912, 12000, 10000, 9000)], 10000),
            ([], 0),
        ):
            esp32.regions = regions
            gc.collect()
            want = gc.mem_free() - less
            got = board.heap_room()
            true(abs(got - want) < 1024, "%r: heap_room %d, want about %d" % (regions, got, want))
    finally:
        esp32.regions = []
