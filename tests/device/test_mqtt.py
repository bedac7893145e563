# Device tests for upcert.mqtt: exact bytes on the wire (MQTT 3.1.1), one write per packet,
# bounded waits, keepalive, AWS limits, the last will, the reason of every MqttError. Runs on the
# unix port with fakesock.FakeSock.
import errno
import time

from fakesock import FakeSock, eq, has, raises
from upcert.errors import CLOSED, PROTOCOL, REFUSED, SERVER, TIMEOUT, MqttError
from upcert.mqtt import Client, check_topic

CONNECT_DEV1 = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04dev1"
CONNACK_OK = b"\x20\x02\x00\x00"


def _connected(reply=None, **kw):
    sock = FakeSock(CONNACK_OK, reply=reply)
    c = Client("dev1", **kw)
    c.connect(sock)
    del sock.writes[:]
    return c, sock


def _puback_all(pkt):
    # Play the broker: acknowledge every QoS 1 PUBLISH with its packet id.
    if pkt[0] & 0xF6 == 0x32:
        i = 2 + 2 + (pkt[2] << 8 | pkt[3])  # header(2) + topic length field + topic
        return b"\x40\x02" + pkt[i : i + 2]
    return None


def test_connect_exact_bytes_one_write():
    sock = FakeSock(CONNACK_OK)
    c = Client("dev1", keepalive_s=60, timeout_s=7)
    eq(c.connect(sock), 0, "session present")
    eq(sock.writes, [CONNECT_DEV1], "CONNECT")
    eq(sock.timeout, 7, "timeout kept on the socket")


def test_connect_keep_session_and_session_present():
    sock = FakeSock(b"\x20\x02\x01\x00")
    c = Client("dev1", keepalive_s=300)
    eq(c.connect(sock, clean_session=False), 1, "session present")
    eq(sock.writes[0][9:12], b"\x00\x01\x2c", "flags and keepalive 300")


def test_connect_refused_codes():
    for rc, text, reason in (
        (5, "not authorized (CONNACK 5)", REFUSED),
        (4, "bad user name or password", REFUSED),
        (3, "server unavailable", PROTOCOL),
        (2, "client id rejected", PROTOCOL),
        (1, "unacceptable protocol version", PROTOCOL),
        (9, "unknown", PROTOCOL),
    ):
        c = Client("dev1")
        e = raises(MqttError, c.connect, FakeSock(b"\x20\x02\x00" + bytes([rc])))
        has(str(e), text)
        eq(e.reason, reason, "reason of CONNACK %d" % rc)


def test_connect_closed_by_broker_names_policy():
    sock = FakeSock()
    sock.eof()
    e = raises(MqttError, Client("dev1").connect, sock)
    has(str(e), "after CONNECT", "iot:Connect")
    eq(e.reason, REFUSED, "closed right after CONNECT")


def test_connect_timeout_and_garbage():
    e = raises(MqttError, Client("dev1", timeout_s=3).connect, FakeSock())
    has(str(e), "no CONNACK", "3 s")
    eq(e.reason, TIMEOUT, "no CONNACK (OSError ETIMEDOUT)")
    e = raises(MqttError, Client("dev1").connect, FakeSock(b"HTTP"))
    has(str(e), "not an MQTT broker")
    eq(e.reason, SERVER, "not a CONNACK")


class _NoneSock(FakeSock):
    # A port whose timed-out blocking read returns None instead of raising.
    def read(self, n):
        return FakeSock.read(self, n) if self.pending else None


def test_connect_timeout_as_none_read():
    e = raises(MqttError, Client("dev1", timeout_s=4).connect, _NoneSock())
    has(str(e), "no CONNACK", "4 s")
    eq(e.reason, TIMEOUT, "reason")


def test_connect_other_socket_errors_pass_through():
    class Reset(FakeSock):
        def read(self, n):
            raise OSError(errno.ECONNRESET)

    e = raises(OSError, Client("dev1").connect, Reset())
    eq(e.args[0], errno.ECONNRESET, "errno kept for the caller")


def test_connect_decides_on_reason_not_text():
    # An error worded like the wire's close but with another reason is not a refusal.
    class Odd(FakeSock):
        def read(self, n):
            raise MqttError("the broker closed the connection", PROTOCOL)

    e = raises(MqttError, Client("dev1").connect, Odd())
    eq((str(e), e.reason), ("the broker closed the connection", PROTOCOL), "passed through")


def test_send_timeout_reason():
    class Stuck(FakeSock):
        def write(self, buf, n=-1):
            return 0

    e = raises(MqttError, Client("dev1", timeout_s=2).connect, Stuck())
    has(str(e), "could not send", "2 s")
    eq(e.reason, TIMEOUT, "reason")


# --- last will (MQTT 3.1.1 §3.1.2.5-7, §3.1.3.2-3) ---------------------------------------------


def test_will_qos1_retain_exact_bytes():
    sock = FakeSock(CONNACK_OK)
    c = Client("dev1")
    c.set_last_will("things/dev1/status", b"offline", retain=True, qos=1)
    c.connect(sock)
    eq(
        sock.writes,
        [
            b"\x10\x2d\x00\x04MQTT\x04\x2e\x00\x3c\x00\x04dev1"
            b"\x00\x12things/dev1/status\x00\x07offline"
        ],
        "CONNECT: will flag, QoS 1, retain; will topic and message after the client id",
    )


def test_will_qos0_str_keep_session():
    sock = FakeSock(CONNACK_OK)
    c = Client("dev1")
    c.set_last_will("things/dev1/lost", "gone")
    c.connect(sock, clean_session=False)
    eq(
        sock.writes,
        [b"\x10\x28\x00\x04MQTT\x04\x04\x00\x3c\x00\x04dev1\x00\x10things/dev1/lost\x00\x04gone"],
        "CONNECT: will flag only (QoS 0, no retain, no clean session)",
    )


def test_will_empty_message_and_reconnect_sends_it_again():
    c = Client("dev1")
    c.set_last_will("t/w", b"", qos=1)
    want = b"\x10\x17\x00\x04MQTT\x04\x0e\x00\x3c\x00\x04dev1\x00\x03t/w\x00\x00"
    for _ in range(2):
        sock = FakeSock(CONNACK_OK)
        c.connect(sock)
        eq(sock.writes, [want], "CONNECT with an empty QoS 1 will")


def test_will_big_message_length_fields():
    c = Client("dev1", bufsize=64)
    c.set_last_will("t", b"w" * 65535)
    sock = FakeSock(CONNACK_OK)
    c.connect(sock)
    wire = sock.wire.getvalue()
    eq(len(wire), 4 + 65556, "whole packet")
    eq(wire[:4], b"\x10\x94\x80\x04", "remaining length 65556 in 3 bytes")
    eq(wire[4 + 16 : 4 + 16 + 5], b"\x00\x01t\xff\xff", "will topic, will message length")
    raises(ValueError, c.set_last_will, "t", b"w" * 65536)


def test_will_refusals_store_nothing():
    c = Client("dev1")
    has(str(raises(ValueError, c.set_last_will, "t/w", b"x", False, 2)), "QoS 2", "0 and 1")
    raises(ValueError, c.set_last_will, "t/w", b"x", False, -1)
    has(str(raises(ValueError, c.set_last_will, "things/+/status", b"x")), "subscriptions")
    has(str(raises(ValueError, c.set_last_will, "a/b/c/d/e/f/g/h/i", b"x")), "8 slashes")
    has(str(raises(ValueError, c.set_last_will, "a" * 257, b"x")), "256")
    raises(ValueError, c.set_last_will, "", b"x")
    has(str(raises(ValueError, c.set_last_will, "t", b"x" * 65536)), "65536", "65535")
    eq((c.lw_topic, c.lw_msg, c.lw_qos, c.lw_retain), (None, None, 0, False), "nothing stored")
    sock = FakeSock(CONNACK_OK)
    c.connect(sock)
    eq(sock.writes, [CONNECT_DEV1], "CONNECT without a will")


def test_will_stored():
    # set_last_will stores what passed the checks (topic as bytes), under umqtt's names.
    c = Client("dev1")
    c.set_last_will("$aws/rules/r/a/b/c/d/e/f/g", "bye", True, 1)
    eq(
        (c.lw_topic, c.lw_msg, c.lw_qos, c.lw_retain),
        (b"$aws/rules/r/a/b/c/d/e/f/g", b"bye", 1, True),
        "stored",
    )


def test_connack_split_across_reads():
    sock = FakeSock(CONNACK_OK)
    sock.chunk = 1
    eq(Client("dev1").connect(sock), 0, "session present")


def test_publish_qos0_exact_bytes():
    c, sock = _connected()
    c.publish("t/a", b"hi", qos=0)
    eq(sock.writes, [b"\x30\x07\x00\x03t/a" + b"hi"], "PUBLISH QoS0")


def test_publish_qos1_waits_for_puback():
    c, sock = _connected(_puback_all)
    c.publish("t/a", "hi")
    eq(sock.writes, [b"\x32\x09\x00\x03t/a\x00\x01hi"], "PUBLISH QoS1 pid 1")
    c.publish("t/a", b"yo", retain=True)
    eq(sock.writes[1], b"\x33\x09\x00\x03t/a\x00\x02yo", "retain, pid 2")


def test_publish_skips_stale_puback():
    c, sock = _connected(lambda p: b"\x40\x02\x00\x07\x40\x02\x00\x01" if p[0] == 0x32 else None)
    c.publish("t/a", b"x")
    eq(sock.pending, bytearray(), "both acks consumed")


def test_publish_timeout_raises():
    c, sock = _connected()
    t0 = time.ticks_ms()
    e = raises(MqttError, c.publish, "t/a", b"x", timeout_ms=60)
    has(str(e), "no PUBACK", "60 ms")
    eq(e.reason, TIMEOUT, "reason")
    dt = time.ticks_diff(time.ticks_ms(), t0)
    if not 60 <= dt < 1000:
        raise AssertionError("timeout took %d ms" % dt)


def test_pid_wraps_to_one_never_zero():
    c, sock = _connected(_puback_all)
    c.pid = 65534
    c.publish("t", b"a")
    c.publish("t", b"b")
    eq(sock.writes[0][5:7], b"\xff\xff", "pid 65535")
    eq(sock.writes[1][5:7], b"\x00\x01", "wrapped pid")


def test_incoming_publish_during_puback_wait():
    got = []

    def broker(pkt):
        if pkt[0] == 0x32:
            # a QoS1 command arrives before our PUBACK
            return b"\x32\x0a\x00\x03c/x\x00\x09cmd" + b"\x40\x02\x00\x01"
        return None

    c, sock = _connected(broker)
    c.set_callback(lambda t, m: got.append((t, m)))
    c.publish("t/a", b"x")
    eq(got, [(b"c/x", b"cmd")], "callback")
    eq(sock.writes[1], b"\x40\x02\x00\x09", "our PUBACK for pid 9")


def test_subscribe_exact_bytes_and_suback():
    c, sock = _connected(lambda p: b"\x90\x03\x00\x01\x01" if p[0] == 0x82 else None)
    eq(c.subscribe("c/x"), 1, "granted QoS")
    eq(sock.writes, [b"\x82\x08\x00\x01\x00\x03c/x\x01"], "SUBSCRIBE")


def test_subscribe_refused_names_topic():
    c, sock = _connected(lambda p: b"\x90\x03\x00\x01\x80")
    e = raises(MqttError, c.subscribe, "things/dev1/commands")
    has(str(e), "things/dev1/commands", "0x80")
    eq(e.reason, PROTOCOL, "reason")


def test_subscribe_timeout():
    c, sock = _connected()
    e = raises(MqttError, c.subscribe, "c/x", 1, 30)
    has(str(e), "no SUBACK", "c/x")
    eq(e.reason, TIMEOUT, "reason")


def test_service_delivers_and_acks_qos1():
    got = []
    c, sock = _connected()
    c.set_callback(lambda t, m: got.append(m))
    sock.feed(b"\x30\x05\x00\x01ca1" + b"\x32\x07\x00\x01c\x12\x34a2")
    c.service()
    eq(got, [b"a1", b"a2"], "both delivered")
    eq(sock.writes, [b"\x40\x02\x12\x34"], "PUBACK")
    eq(sock.timeout, 15, "setblocking(True) after the first byte became our timeout")
    c.service()  # nothing waiting: returns at once
    eq(len(sock.writes), 1, "no extra writes")


def test_service_pings_when_idle_then_declares_dead():
    c, sock = _connected(keepalive_s=10)
    w = c.sock
    w.tx_ms = time.ticks_add(time.ticks_ms(), -5001)
    c.service()
    eq(sock.writes, [b"\xc0\x00"], "PINGREQ after keepalive/2")
    sock.feed(b"\xd0\x00")
    c.service()
    eq(c._ping_ms, None, "PINGRESP clears the ping")
    w.tx_ms = time.ticks_add(time.ticks_ms(), -5001)
    c.service()
    eq(len(sock.writes), 2, "second ping")
    w.rx_ms = time.ticks_add(time.ticks_ms(), -15001)
    c._ping_ms = time.ticks_add(w.rx_ms, 1)
    e = raises(MqttError, c.service)
    has(str(e), "no PINGRESP (keepalive 10 s): link dead")
    eq(e.reason, TIMEOUT, "reason")


def test_link_closed_reason():
    c, sock = _connected()
    sock.eof()
    e = raises(MqttError, c.service)
    eq((str(e), e.reason), ("the broker closed the connection", CLOSED), "closed link")
    c, sock = _connected(lambda p: b"\x40\x02" if p[0] == 0x32 else None)
    sock.eof()  # the PUBACK ends after its length byte
    eq(raises(MqttError, c.publish, "t/a", b"x").reason, CLOSED, "closed inside a packet")


def test_umqtt_not_loaded():
    # The protocol is framed here whole: umqtt.simple's code would cost RAM for nothing.
    import sys

    eq("umqtt.simple" in sys.modules, False, "umqtt.simple imported")


def test_own_remaining_length_reader():
    # Acks and stray packets are read with mqtt's own reader (never a _recv_len, the name of
    # umqtt.simple's);
    # a multi-byte length is honoured, a 5-byte one refused.
    def boom():
        raise AssertionError("umqtt's _recv_len called")

    stray = b"\xb0\xc8\x01" + b"\x00" * 200  # 200-byte body, length in 2 bytes
    c, sock = _connected(lambda p: stray + b"\x40\x02\x00\x01" if p[0] == 0x32 else None)
    c._recv_len = boom
    c.publish("t/a", b"x")
    eq(sock.pending, bytearray(), "stray packet and PUBACK consumed")
    c, sock = _connected(lambda p: b"\x40\xff\xff\xff\xff\x01" if p[0] == 0x32 else None)
    e = raises(MqttError, c.publish, "t/a", b"x")
    eq(e.reason, PROTOCOL, "malformed remaining length")


def test_service_no_ping_when_recently_sent():
    c, sock = _connected(keepalive_s=10)
    c.service()
    eq(sock.writes, [], "no ping right after CONNECT")


def test_big_packet_header_then_payload():
    c, sock = _connected(bufsize=32)
    c.publish("t", b"z" * 40, qos=0)
    eq(sock.writes, [b"\x30\x2b\x00\x01t", b"z" * 40], "two records only when over buffer")


def test_varint_length_two_bytes():
    c, sock = _connected(bufsize=256)
    c.publish("t", b"z" * 200, qos=0)
    eq(sock.writes[0][:5], b"\x30\xcb\x01\x00\x01", "remaining length 203")


def test_limits():
    has(str(raises(ValueError, Client, "x" * 129)), "128")
    Client("x" * 128)
    has(str(raises(ValueError, check_topic, "a" * 257)), "256")
    check_topic("a" * 256)
    has(str(raises(ValueError, check_topic, "a/b/c/d/e/f/g/h/i")), "8 slashes", "7")
    check_topic("a/b/c/d/e/f/g/h")
    check_topic("$aws/rules/myrule/a/b/c/d/e/f/g/h")  # Basic Ingest prefix not counted
    raises(ValueError, check_topic, "$aws/things/a/b/c/d/e/f/g")  # reserved topics count
    raises(ValueError, check_topic, "$aws/rules/myrule/")
    has(str(raises(ValueError, check_topic, "t/+")), "subscriptions")
    check_topic("t/+", True)
    c, sock = _connected()
    has(str(raises(ValueError, c.publish, "t", b"x" * 131073)), "131072")
    raises(ValueError, c.publish, "t", b"x", qos=2)
    eq(sock.writes, [], "nothing sent for rejected input")


def test_disconnect():
    c, sock = _connected()
    c.disconnect()
    eq(sock.writes, [b"\xe0\x00"], "DISCONNECT")
    eq(sock.closed, True, "closed")
