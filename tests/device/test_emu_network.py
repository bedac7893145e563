# Device tests of the emulated board's network faults (boards/unix/emu/emu_network.py and
# emu_socket.py) under the unix port: a network.bin written as the host writes it, real sockets
# to a listener in this process.
import errno
import os
import struct
import sys
import time

sys.path.insert(0, ("/".join(__file__.split("/")[:-3]) or ".") + "/boards/unix/emu")
import emu_network as network  # noqa: E402
import emu_socket as socket  # noqa: E402
from checks import eq, raises, true  # noqa: E402

_PATH = (os.getenv("UPCERT_TEST_TMP") or "/tmp") + "/network.bin"


def _set(flags=0, drops=0, connect_ms=0, dhcp_ms=0):
    with open(_PATH, "wb") as f:
        f.write(struct.pack("<IIII", flags, drops, connect_ms, dhcp_ms))


def _fresh(**faults):
    _set(**faults)
    network.install(open(_PATH, "rb"))
    network._wlans.clear()
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    sta.connect("lab", "pw")
    return sta


def _listener():
    # (listening socket, its port): the unix port has no getsockname(), so pick free ports.
    import random

    while True:
        port = 20000 + random.getrandbits(14)
        srv = socket._s.socket()
        try:
            srv.bind(socket._s.getaddrinfo("127.0.0.1", port)[0][-1])
        except OSError:
            srv.close()
            continue
        srv.listen(2)
        return srv, port


def _pair():
    srv, port = _listener()
    c = socket.socket()
    c.settimeout(2)
    c.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    s, _ = srv.accept()
    srv.close()
    return c, s


def test_up_by_default_and_traffic_flows():
    sta = _fresh()
    true(sta.isconnected(), "connected after connect()")
    eq(sta.status(), network.STAT_GOT_IP, "GOT_IP")
    c, s = _pair()
    c.write(b"ping")
    eq(s.recv(4), b"ping", "bytes through the stand-in socket")
    c.close()
    s.close()


def test_connect_is_needed():
    _set()
    network.install(open(_PATH, "rb"))
    network._wlans.clear()
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    true(not sta.isconnected(), "active alone does not associate (as on the ESP32)")
    eq(sta.status(), network.STAT_IDLE, "idle before connect()")


def test_wifi_down_fails_like_lwip():
    sta = _fresh()
    c, s = _pair()
    _set(flags=network.AP_GONE, drops=1)
    true(not sta.isconnected(), "isconnected() false while the AP is gone")
    eq(sta.status(), network.STAT_NO_AP_FOUND, "status: the driver's retries find no AP")
    e = raises(OSError, socket.getaddrinfo, "localhost", 8883)
    eq(e.args[0], -202, "getaddrinfo: OSError(-202), lwIP EAI_FAIL")
    e = raises(OSError, c.write, b"x")
    eq(e.args[0], errno.ECONNABORTED, "open socket aborted")
    n = socket.socket()
    e = raises(OSError, n.connect, socket._s.getaddrinfo("127.0.0.1", 1)[0][-1])
    eq(e.args[0], errno.EHOSTUNREACH, "connect without an IP: no route")
    e = raises(OSError, sta.connect, "lab", "pw")
    true("Wifi Internal Error" in str(e), "connect() while the driver retries")
    c.close()
    s.close()
    n.close()


def test_wifi_back_after_the_lease_and_old_sockets_stay_aborted():
    sta = _fresh()
    c, s = _pair()
    _set(flags=network.AP_GONE, drops=1)
    true(not sta.isconnected(), "down")
    _set(drops=1, dhcp_ms=300)  # the AP is back; the lease takes 300 ms
    true(not sta.isconnected(), "still associating")
    # status() keeps the last failure's reason until the lease (network_wlan_status)
    eq(sta.status(), network.STAT_NO_AP_FOUND, "the driver reconnects by itself")
    time.sleep_ms(350)
    true(sta.isconnected(), "lease obtained without a connect() call")
    e = raises(OSError, c.readinto, bytearray(4))
    eq(e.args[0], errno.ECONNABORTED, "a socket from before the drop stays aborted")
    c2, s2 = _pair()  # new sockets work
    c2.write(b"ok")
    eq(s2.recv(2), b"ok", "new connection")
    for x in (c, s, c2, s2):
        x.close()


def test_short_drop_between_polls_is_seen():
    sta = _fresh()
    _set(drops=1, dhcp_ms=200)  # dropped and back before the board looked
    true(not sta.isconnected(), "the link went down: a new lease is needed")
    time.sleep_ms(250)
    true(sta.isconnected(), "back")


def test_dns_alone():
    sta = _fresh(flags=network.DNS_DOWN)
    true(sta.isconnected(), "Wi-Fi up")
    e = raises(OSError, socket.getaddrinfo, "localhost", 8883)
    eq(e.args[0], -202, "lookup fails")
    _set()
    true(len(socket.getaddrinfo("localhost", 8883)) > 0, "lookups work again")


def test_slow_connect_and_timeout():
    _fresh(connect_ms=200)
    c, s = _pair()  # 200 ms < the 2 s timeout: connects late
    c.close()
    s.close()
    srv, port = _listener()
    _set(connect_ms=5000)
    n = socket.socket()
    n.settimeout(0.2)
    e = raises(OSError, n.connect, socket.getaddrinfo("127.0.0.1", port)[0][-1])
    eq(e.args[0], errno.ETIMEDOUT, "slower than the timeout: ETIMEDOUT")
    n.close()
    srv.close()


def test_disconnect_stops_the_driver():
    sta = _fresh()
    sta.disconnect()
    eq(sta.status(), network.STAT_IDLE, "idle after disconnect()")
    true(not sta.isconnected(), "down")
    sta.connect("lab", "pw")
    true(sta.isconnected(), "connect() again works")
