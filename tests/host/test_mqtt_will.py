"""The last will of upcert.mqtt against the local AWS IoT stand-in (mosquitto with the AWS TLS 1.2
policy, per-thing ACL, identity plugin): the device side runs on the MicroPython unix port (the
.mpy of tlsconn + mqtt, as a board loads them) with a device certificate, and an admin
subscriber (paho-mqtt) watches things/<thing>/#. A link dropped without DISCONNECT (process
killed, socket closed) delivers the will with its payload, QoS and retain flag; a clean
DISCONNECT delivers none, proven against a positive control that arrives after it; nor does a
will on another thing's topic."""

import os
import subprocess

import pytest
from upcert.cloud.standin import Cloud, CloudError, Subscription
from upcert.pki.ca import LocalCa

from tests.host.test_device_tls import HEAP_LINK
from tests.host.test_rotation_device import make_device, mpy_lib
from tests.tools import micropython_cmd, require, require_plugin_build

# argv: device folder, port, thing, mode, will payload, will QoS, will retain (0/1).
SCRIPT = r"""
import sys
from upcert import tlsconn, mqtt
from upcert.errors import MqttError
d, port, thing, mode, will = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
qos, retain = int(sys.argv[6]), sys.argv[7] == "1"
def rd(name):
    with open(d + "/" + name, "rb") as f:
        return f.read()
ctx = tlsconn.make_context(rd("cert.der"), rd("key.der"), [rd("roots.der")])
def link(cid, topic, msg):
    c = mqtt.Client(cid, keepalive_s=60)
    c.set_last_will(topic, msg, retain, qos)
    c.connect(tlsconn.Connector(ctx, timeout_s=10).connect("localhost", port))
    return c
status = "things/%s/status" % thing
if mode == "kill":
    link(thing, status, will)
    print("CONNECTED")
    sys.stdin.readline()  # the host kills the process here: no DISCONNECT, no TLS close
elif mode == "close":
    link(thing, status, will).close()  # socket closed without DISCONNECT
    print("CLOSED")
elif mode == "clean":
    c = link(thing, status, will)
    c.publish("things/%s/telemetry" % thing, b"up", qos=1)
    c.disconnect()
    print("DISCONNECTED")
    # Positive control, after the clean DISCONNECT: another link with a will, dropped.
    link(thing, status, b"control: link dropped").close()
    print("CONTROL")
elif mode == "foreign":
    try:
        link(thing, "things/someone-else/status", will).close()
        print("ACCEPTED")
    except MqttError as e:
        print("REFUSED", e.reason, e)
    link(thing, status, b"control: link dropped").close()
    print("CONTROL")
"""
CONTROL = b"control: link dropped"


@pytest.fixture(scope="module", autouse=True)
def _components():
    # Missing components fail under CI=true (tests.tools.missing), skip elsewhere.
    require_plugin_build()  # mosquitto, gcc and headers for the identity plugin
    require("micropython")
    require("mpy-cross")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    ca = LocalCa.init(tmp_path_factory.mktemp("ca"), key_type="ec")
    with Cloud(tmp_path_factory.mktemp("cloud"), ca) as c:
        yield c


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return mpy_lib(tmp_path_factory.mktemp("mpy"))


def _device(cloud, lib, folder, thing, mode, will, qos=1, retain=False):
    """The device script as a process (stdin and stdout piped, text)."""
    make_device(folder, cloud, thing, left_days=300)
    (folder / "will.py").write_text(SCRIPT)
    args = [str(folder), str(cloud.port), thing, mode, will, str(qos), "1" if retain else "0"]
    return subprocess.Popen(
        micropython_cmd(HEAP_LINK) + [str(folder / "will.py"), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, MICROPYPATH=str(lib)),
        cwd=str(folder),
    )


def _finish(proc, timeout_s=60):
    try:
        out = proc.communicate(timeout=timeout_s)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return out


def _wait(sub, proc, predicate, what):
    try:
        return sub.wait_for(predicate, timeout_s=20)
    except CloudError as e:
        if proc.poll() is None:
            proc.kill()
        pytest.fail(f"{what}: {e}; the device printed:\n{_finish(proc)}")


def test_will_sent_when_device_process_is_killed(cloud, lib, tmp_path):
    thing = "will-kill"
    with Subscription(cloud, f"things/{thing}/#") as sub:
        proc = _device(cloud, lib, tmp_path / "dev", thing, "kill", "offline: killed", qos=0)
        try:
            line = proc.stdout.readline()
            assert line.strip() == "CONNECTED", line + _finish(proc)
            assert not sub.messages, "no will while the link is up"
            proc.kill()  # the kernel closes the TCP connection: no DISCONNECT
            proc.wait(10)
        finally:
            _finish(proc)
        m = _wait(sub, proc, lambda m: m.topic == f"things/{thing}/status", "no will after kill")
    assert (m.payload, m.qos, m.retain) == (b"offline: killed", 0, False)


def test_will_qos1_retained_when_socket_closed_without_disconnect(cloud, lib, tmp_path):
    thing = "will-close"
    topic = f"things/{thing}/status"
    with Subscription(cloud, f"things/{thing}/#") as sub:
        proc = _device(cloud, lib, tmp_path / "dev", thing, "close", "offline: closed", 1, True)
        m = _wait(sub, proc, lambda m: m.topic == topic, "no will after close")
        out = _finish(proc)
    assert proc.returncode == 0 and out.strip() == "CLOSED", out
    assert (m.payload, m.qos) == (b"offline: closed", 1)
    # Retained: a subscriber arriving later gets it with the retain flag.
    with Subscription(cloud, topic) as late:
        kept = late.wait_for(timeout_s=10)
        late.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)  # clear it
    assert (kept.payload, kept.retain) == (b"offline: closed", True)


def test_no_will_after_clean_disconnect(cloud, lib, tmp_path):
    thing = "will-clean"
    with Subscription(cloud, f"things/{thing}/#") as sub:
        proc = _device(cloud, lib, tmp_path / "dev", thing, "clean", "offline: must not be sent")
        # Bounded wait for the control: a will dropped by a second link opened after the
        # DISCONNECT. Deliveries to one subscriber keep the broker's order, so a will of the
        # first link would have arrived before it.
        _wait(sub, proc, lambda m: m.payload == CONTROL, "no positive control")
        out = _finish(proc)
        seen = [(m.topic, m.payload) for m in sub.messages]
    assert proc.returncode == 0 and out.split() == ["DISCONNECTED", "CONTROL"], out
    assert seen == [
        (f"things/{thing}/telemetry", b"up"),
        (f"things/{thing}/status", CONTROL),
    ], seen


def test_will_on_another_things_topic_is_never_published(cloud, lib, tmp_path):
    # mosquitto accepts the CONNECT and drops the will when it is due (ACL write check); AWS
    # authorises a will by iot:Publish (+ iot:RetainPublish) on its topic.
    thing = "will-foreign"
    with Subscription(cloud, "things/#") as sub:
        proc = _device(cloud, lib, tmp_path / "dev", thing, "foreign", "forged", qos=1)
        _wait(sub, proc, lambda m: m.payload == CONTROL, "no positive control")
        out = _finish(proc)
        seen = [(m.topic, m.payload) for m in sub.messages]
    assert proc.returncode == 0 and out.split() == ["ACCEPTED", "CONTROL"], out
    assert seen == [(f"things/{thing}/status", CONTROL)], seen
