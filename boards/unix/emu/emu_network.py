# `network` stand-in: a WLAN that is up as soon as it is active. The emulated board reaches
# the host's network (127.0.0.1) directly, so there is no radio, DHCP or scan.
# Names and status codes follow ports/esp32/network_wlan.c.
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

_hostname = "upcert-emu"
_wlans = {}


def hostname(name=None):
    """Get or set the hostname the interfaces would announce."""
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


class WLAN:
    """WLAN(STA_IF | AP_IF). Objects for the same interface share one state, as on the port."""

    IF_STA = STA_IF
    IF_AP = AP_IF

    def __init__(self, interface_id=STA_IF):
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        self._if = interface_id
        self._s = _wlans.get(interface_id)
        if self._s is None:
            self._s = _wlans[interface_id] = {"active": False, "ssid": "", "up": False}

    def active(self, is_active=None):
        if is_active is None:
            return self._s["active"]
        self._s["active"] = bool(is_active)
        # The emulated station is connected as soon as it is up (the host's network).
        self._s["up"] = self._s["active"] and self._if == STA_IF

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self._s["active"]:
            raise OSError("Wifi Not Started")
        if self._if != STA_IF:
            raise OSError("Wifi Invalid Mode")
        self._s["ssid"] = ssid or self._s["ssid"]
        self._s["up"] = True

    def disconnect(self):
        self._s["up"] = False

    def isconnected(self):
        return self._s["active"] and self._s["up"]

    def status(self, param=None):
        if param == "rssi":
            return -50
        if param is not None:
            raise ValueError("unknown status param")
        return STAT_GOT_IP if self.isconnected() else STAT_IDLE

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
        raise ValueError("unknown config param")
