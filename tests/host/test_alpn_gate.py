"""The stand-in's port 443 (cloud/alpn.py): HAProxy routes a TLS connection to the same
mosquitto only when its ClientHello offers ALPN x-amzn-mqtt-ca, as AWS IoT serves 443; real
haproxy, real mosquitto, CPython's ssl and paho as the clients."""

import socket
import ssl

import paho.mqtt.client as mqtt
import pytest
from upcert.cloud.standin import Cloud, Subscription
from upcert.pki.ca import LocalCa
from upcert.pki.certs import generate_key, write_certificate, write_private_key

from tests.tools import require

ALPN = "x-amzn-mqtt-ca"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    require("mosquitto")
    require("haproxy")
    ca = LocalCa.init(tmp_path_factory.mktemp("ca"), key_type="ec")
    with Cloud(tmp_path_factory.mktemp("cloud"), ca, services=False, alpn=True) as c:
        yield c


def _identity(cloud, tmp_path, thing):
    key = generate_key()
    cert, keyfile = tmp_path / f"{thing}.pem", tmp_path / f"{thing}.key"
    write_private_key(keyfile, key)
    write_certificate(cert, cloud.ca.issue_device(thing, key.public_key()))
    return cert, keyfile


def _handshake(cloud, cert, key, alpn):
    ctx = cloud.tls_context(cert, key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection((cloud.host, cloud.alpn_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=cloud.endpoint) as tls:
            return tls.version()


def test_mqtt_over_443_with_the_alpn_reaches_the_broker(cloud, tmp_path):
    cert, key = _identity(cloud, tmp_path, "gate-1")
    assert cloud.alpn_port and cloud.alpn_port != cloud.port
    assert cloud.status()["alpn"] == "running"
    assert f":{cloud.alpn_port} (ALPN x-amzn-mqtt-ca)" in cloud.status_text()
    with Subscription(cloud, "things/gate-1/telemetry") as sub:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gate-1")
        ctx = cloud.tls_context(cert, key)
        ctx.set_alpn_protocols([ALPN])
        client.tls_set_context(ctx)
        client.connect(cloud.host, cloud.alpn_port)
        client.loop_start()
        try:
            client.publish("things/gate-1/telemetry", b"over 443", qos=1).wait_for_publish(5)
            msg = sub.wait_for(lambda m: m.payload == b"over 443")
            assert msg.topic == "things/gate-1/telemetry"
        finally:
            client.disconnect()
            client.loop_stop()


@pytest.mark.parametrize("alpn", [None, ["http/1.1"], ["mqtt"]])
def test_a_client_without_that_alpn_is_refused_before_tls(cloud, tmp_path, alpn):
    cert, key = _identity(cloud, tmp_path, "gate-2")
    assert _handshake(cloud, cert, key, [ALPN]) == "TLSv1.2"  # the same client, with it: in
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _handshake(cloud, cert, key, alpn)


def test_down_stops_the_listener_and_up_brings_it_back_on_its_port(cloud):
    port = cloud.alpn_port
    cloud.down()
    assert cloud.status()["alpn"] == "stopped"
    with pytest.raises(OSError):
        socket.create_connection((cloud.host, port), timeout=1).close()
    cloud.up()
    assert cloud.alpn_port == port and cloud.status()["alpn"] == "running"
    again = Cloud.load(cloud.state_dir, cloud.ca)
    assert again.alpn and again.alpn_port == port
