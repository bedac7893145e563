# `network` stand-in: an ESP32 Wi-Fi station whose access point the host can take away.
# The emulated board reaches the host's network (127.0.0.1) directly: no radio, scan or DHCP
# server. Names, status codes and the station's state machine follow MicroPython's
# ports/esp32/network_wlan.c: connect() asks the driver to associate; after a drop the driver
# reconnects by itself for as long as a connect is requested (its STA_DISCONNECTED handler calls
# esp_wifi_connect() again); status() answers as network_wlan_status() does.
# The host's faults (<state>/network.bin, upcert.emu.netfault; none without a host):
#   flags u32 (1: access point gone, 2: DNS failing) | drops u32 (the AP went away this many
#   times: sockets older than the last drop are aborted) | connect_ms u32 (each TCP connect
#   takes this long) | dhcp_ms u32 (association + DHCP lease once the AP is there)
# emu_socket.py applies them to sockets.
import struct
from time import ticks_diff, ticks_ms  # the unix port's own module, imported before the swap

import emu_machine
from micropython import const

STA_IF = const(0)
AP_IF = const(1)
STAT_IDLE = const(1000)
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)
STAT_NO_AP_FOUND = const(201)
STAT_WRONG_PASSWORD = const(202)
STAT_BEACON_TIMEOUT = const(200)
STAT_ASSOC_FAIL = const(203)
STAT_HANDSHAKE_TIMEOUT = const(204)
_ASSOC_LEAVE = const(8)  # WIFI_REASON_ASSOC_LEAVE: after disconnect()
AP_GONE = const(1)
DNS_DOWN = const(2)

_hostname = "upcert-emu"
_wlans = {}
_f = None  # the open network.bin (r+b), opened before the root was unmounted
_buf = bytearray(16)


def install(f):
    """Read the host's network faults from the open file `f` (emu_boot, at power-on)."""
    global _f
    _f = f


def faults():
    """(flags, drops, connect_ms, dhcp_ms) as the host set them; all 0 without a host."""
    if _f is None:
        return 0, 0, 0, 0
    _f.seek(0)
    if _f.readinto(_buf) != 16:
        return 0, 0, 0, 0
    return struct.unpack("<IIII", _buf)


def hostname(name=None):
    """Get or set the hostname the interfaces would announce."""
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


def _sta():
    s = _wlans.get(STA_IF)
    if s is None:
        s = _wlans[STA_IF] = {"active": False, "ssid": "", "req": False, "up": False,
                              "reason": 0, "t": None, "drops": faults()[1]}
    return s


def _update(s):
    # Bring the station up to date with the host's faults: a drop takes the link (and its IP)
    # away; with the AP there and a connect requested, the driver associates and gets its
    # lease dhcp_ms after it started trying.
    flags, drops, _, dhcp_ms = faults()
    if drops != s["drops"]:
        s["drops"] = drops
        if s["up"]:
            s["up"], s["reason"], s["t"] = False, STAT_BEACON_TIMEOUT, None
    if not (s["active"] and s["req"]):
        return
    if flags & AP_GONE:  # the driver's retries find nothing (network_wlan.c: "no AP found")
        s["up"], s["reason"], s["t"] = False, STAT_NO_AP_FOUND, None
        return
    if not s["up"]:
        now = ticks_ms()
        if s["t"] is None:
            s["t"] = now
        if ticks_diff(now, s["t"]) >= dhcp_ms:
            s["up"], s["reason"], s["t"] = True, 0, None


def online():
    """True while the station has its IP (what sockets need)."""
    s = _sta()
    _update(s)
    return s["active"] and s["up"]


class WLAN:
    """WLAN(STA_IF | AP_IF). Objects for the same interface share one state, as on the port."""

    IF_STA = STA_IF
    IF_AP = AP_IF

    def __init__(self, interface_id=STA_IF):
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        self._if = interface_id
        if interface_id == STA_IF:
            self._s = _sta()
        else:
            self._s = _wlans.get(AP_IF)
            if self._s is None:
                self._s = _wlans[AP_IF] = {"active": False, "ssid": "", "req": False,
                                           "up": False, "reason": 0, "t": None, "drops": 0}

    def active(self, is_active=None):
        if is_active is None:
            return self._s["active"]
        self._s["active"] = bool(is_active)
        if not is_active:  # WIFI_EVENT_STA_STOP
            self._s["up"], self._s["t"] = False, None

    def connect(self, ssid=None, key=None, *, bssid=None):
        s = self._s
        if not s["active"]:
            raise OSError("Wifi Not Started")
        if self._if != STA_IF:
            raise OSError("Wifi Invalid Mode")
        _update(s)
        if s["req"] and not s["up"]:
            # esp_wifi_connect() while the driver is associating or retrying after a drop:
            # ESP_ERR_WIFI_CONN ("sta is connecting, return error"), which
            # ports/esp32/network_common.c raises as OSError("Wifi Internal Error").
            raise OSError("Wifi Internal Error")
        s["ssid"] = ssid or s["ssid"]
        s["req"], s["reason"] = True, 0
        if not s["up"]:
            s["t"] = ticks_ms()
        _update(s)

    def disconnect(self):
        s = self._s
        s["req"], s["up"], s["t"], s["reason"] = False, False, None, _ASSOC_LEAVE

    def isconnected(self):
        if self._if != STA_IF:
            return False
        _update(self._s)
        return self._s["active"] and self._s["up"]

    def status(self, param=None):
        if param == "rssi":
            return -50
        if param is not None:
            raise ValueError("unknown status param")
        if self._if != STA_IF:
            return None
        s = self._s
        _update(s)
        r = s["reason"]
        if s["active"] and s["up"]:
            return STAT_GOT_IP
        if r in (STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD):
            return r
        if r == _ASSOC_LEAVE:
            return STAT_IDLE
        if s["req"] and s["active"]:
            return STAT_CONNECTING
        return r or STAT_IDLE

    def scan(self):
        return []

    def ifconfig(self, config=None):
        if config is not None:
            return None
        if self._if == AP_IF:
            return ("192.168.4.1", "255.255.255.0", "192.168.4.1", "0.0.0.0")
        if self.isconnected():
            return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kwargs):
        if kwargs:
            if "ssid" in kwargs or "essid" in kwargs:
                self._s["ssid"] = kwargs.get("ssid", kwargs.get("essid"))
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        name = args[0]
        if name == "mac":
            mac = bytearray(emu_machine.unique_id())
            mac[5] = (mac[5] + self._if) & 0xFF  # the AP MAC is the base MAC + 1
            return bytes(mac)
        if name in ("ssid", "essid"):
            return self._s["ssid"]
        if name in ("hostname", "dhcp_hostname"):
            return _hostname
        if name == "channel":
            return 1
        if name == "reconnects":
            return -1  # the port's default: the driver retries for ever
        raise ValueError("unknown config param")
