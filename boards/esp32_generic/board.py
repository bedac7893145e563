# Board definition for a generic ESP32 running stock MicroPython: Wi-Fi, NTP, the ATECC608's bus
# pins; the credential store a config names is made by upcert.store.make (esp32.NVS,
# esp32.Partition through the store's own module). Installed as the board's /lib/board.mpy.
import time

from micropython import const
from upcert.errors import ConnectError

NAME = "esp32-generic"
# How the board reaches the network: "wifi" (the config needs 'wifi', so `upcert provision`
# refuses without --wifi-ssid or --no-wifi) or "own" (Ethernet, or a network it brings up itself).
NETWORK = "wifi"


def network_up(config, timeout_ms=20000):
    """Bring up Wi-Fi station mode from config['wifi'] (ssid, password); wait until connected.

    Without a 'wifi' entry an already connected interface is used as is. Raises ConnectError
    naming the SSID (and the last WLAN status) on timeout. timeout_ms 0 (the agent, before each
    connection): no wait, and the driver is left to its own reconnects.

    After a drop the ESP32 port's driver reassociates by itself for as long as a connect is
    requested (ports/esp32/network_wlan.c, its STA_DISCONNECTED handler), and connect() while it
    is at it fails ("Wifi Internal Error", ESP_ERR_WIFI_CONN): so connect() is asked for only
    when the station is idle (never asked, or disconnect() after a timeout), and a failing
    connect() is waited out like a slow association.
    """
    import network

    wlan = network.WLAN(network.STA_IF)
    wifi = config.get("wifi")
    if not wifi:
        if wlan.isconnected():
            return wlan
        raise ConnectError(
            "no network: Wi-Fi is down and config has no 'wifi' {ssid, password}: add it with upcert provision"
        )
    if not wlan.active():
        wlan.active(True)
    if wlan.isconnected():
        return wlan
    ssid = wifi["ssid"]
    if timeout_ms or wlan.status() == network.STAT_IDLE:
        try:
            wlan.connect(ssid, wifi.get("password", ""))
        except OSError:
            pass  # the driver is associating already
    start = time.ticks_ms()
    while not wlan.isconnected():
        if time.ticks_diff(time.ticks_ms(), start) >= timeout_ms:
            status = wlan.status()
            if timeout_ms:
                wlan.disconnect()  # start afresh at the next call
            raise ConnectError(
                "wifi '%s': not connected after %d ms (%s): check ssid, password and signal"
                % (ssid, timeout_ms, _status_name(network, status))
            )
        time.sleep_ms(100)
    return wlan


# IDF heap that one more mbedTLS connection (a rotation's trial) needs on the ESP32: record
# buffers of 16 KB in + 4 KB out (ports/esp32/boards/sdkconfig.base sets
# CONFIG_MBEDTLS_ASYMMETRIC_CONTENT_LEN; ESP-IDF's default lengths) plus handshake state. An
# estimate from those settings, not a measurement on a chip.
_TLS_IDF = const(32768)


def heap_room():
    """Bytes of RAM a rotation can count on. On the ESP32 port (MicroPython >= 1.21) the heap
    starts at 56 KB and grows into the ESP-IDF heap on demand, and gc.mem_free() already adds
    the largest free IDF block it could grow into (py/modgc.c: free + max_new_split). mbedTLS
    allocates from that same IDF heap, so the part of the largest block that a second TLS
    connection needs (_TLS_IDF) is not counted. On a port whose heap does not grow,
    idf_heap_info reports nothing to subtract. Callers collect first when they want the
    figure after a collection (the agent's loop does after every cycle)."""
    import gc

    free = gc.mem_free()
    try:
        import esp32

        big = max([r[2] for r in esp32.idf_heap_info(esp32.HEAP_DATA)] or [0])
    except (ImportError, AttributeError):
        return free
    return max(0, free - min(big, _TLS_IDF))


def _status_name(network, status):
    for name in ("STAT_WRONG_PASSWORD", "STAT_NO_AP_FOUND", "STAT_CONNECT_FAIL", "STAT_CONNECTING",
                 "STAT_BEACON_TIMEOUT", "STAT_IDLE"):
        if getattr(network, name, None) == status:
            return name
    return "status %r" % (status,)


def _ntp_sync():
    import ntptime

    ntptime.settime()


def clock():
    """A Clock whose sync() sets the RTC by NTP (ntptime.settime; may raise OSError)."""
    from upcert.clock import Clock

    return Clock(sync_fn=_ntp_sync)


def atecc(st):
    """The ATECC608 driver for store settings `st`: I2C(0) at 100 kHz (the wake pulse needs
    <= 100 kHz) on sda/scl, default GPIO16/GPIO17 and address 0x60 as on the ESP32-WROOM-32SE
    (Espressif's ESP32-WROOM-32SE datasheet); no I/O until the first command."""
    from machine import I2C, Pin
    from upcert.atecc import ATECC

    i2c = I2C(0, sda=Pin(st.get("sda", 16)), scl=Pin(st.get("scl", 17)), freq=100000)
    return ATECC(i2c, st.get("address", 0x60))


def store(config):
    """The credential store config['store'] names (upcert.store.make: fs, nvs, partition,
    esp_secure_cert, atecc608), the ATECC608 on this board's bus (atecc)."""
    from upcert.store import make

    return make(config, atecc)
