"""Tests for upcert.cloud.standin against a real mosquitto with real TLS: AWS's TLS 1.2 policy, client
certificates from the local CA, per-thing topics, and the broker's life cycle.
"""

import datetime
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import warnings

import paho.mqtt.client as mqtt
import pytest
from upcert.cloud import standin as cloud_mod
from upcert.cloud.standin import AWS_TLS12_CIPHERS, Cloud, CloudError, Subscription
from upcert.pki.ca import LocalCa
from upcert.pki.certs import generate_key, write_certificate, write_private_key

from tests.tools import ROOT, require, wait_until


@pytest.fixture(scope="module", autouse=True)
def _mosquitto():
    require("mosquitto")


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return LocalCa.init(tmp_path_factory.mktemp("ca"), key_type="rsa")


@pytest.fixture(scope="module")
def cloud(ca, tmp_path_factory):
    with Cloud(tmp_path_factory.mktemp("cloud"), ca) as c:
        yield c


def identity(ca, tmp_path, thing, **issue):
    """(certfile, keyfile) for a thing, issued by ca."""
    key = generate_key()
    cert, keyfile = tmp_path / f"{thing}.pem", tmp_path / f"{thing}.key"
    write_private_key(keyfile, key)
    write_certificate(cert, ca.issue_device(thing, key.public_key(), **issue))
    return cert, keyfile


def handshake(cloud, cert=None, key=None, versions=(ssl.TLSVersion.TLSv1_2,) * 2, ciphers=None):
    """(protocol, cipher) of a raw TLS handshake with the broker; raises ssl.SSLError."""
    ctx = cloud.tls_context(cert, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 on purpose
        ctx.minimum_version, ctx.maximum_version = versions
    if ciphers:
        ctx.set_ciphers(ciphers)
    with socket.create_connection((cloud.host, cloud.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=cloud.endpoint) as tls:
            tls.recv(0) if tls.version() == "TLSv1.3" else None  # 1.3 sends the alert later
            return tls.version(), tls.cipher()[0]


def publish_v5(client, topic, payload=b"x"):
    """Reason code of the PUBACK (MQTT 5 says why a publish was refused)."""
    done, codes = threading.Event(), []
    client.on_publish = lambda c, u, mid, rc, props: (codes.append(rc), done.set())
    client.publish(topic, payload, qos=1)
    assert done.wait(5), "no PUBACK"
    return codes[0]


def close(client):
    client.disconnect()
    client.loop_stop()


# --- topics and authorisation ---------------------------------------------------------------


def test_device_publishes_under_its_prefix_and_admin_receives(cloud, ca, tmp_path):
    cert, key = identity(ca, tmp_path, "dev1")
    with Subscription(cloud, "things/#") as sub:
        dev = cloud.client("dev1", cert, key)
        dev.publish("things/dev2/telemetry", b"forged", qos=1).wait_for_publish(5)
        dev.publish("things/dev1/telemetry", b"hello", qos=1).wait_for_publish(5)
        msg = sub.wait_for(lambda m: m.topic == "things/dev1/telemetry", timeout_s=5)
        assert msg.payload == b"hello"
        assert [m.topic for m in sub.messages] == ["things/dev1/telemetry"]  # forged one dropped
        close(dev)
    assert "u'dev1'" in cloud.log_text()  # CN became the username (the identity plugin)


def test_refusals_are_explicit_with_mqtt5(cloud, ca, tmp_path):
    cert, key = identity(ca, tmp_path, "dev1")
    dev = cloud.client("dev1", cert, key, protocol=mqtt.MQTTv5)
    try:
        assert not publish_v5(dev, "things/dev1/x").is_failure  # "No matching subscribers"
        assert publish_v5(dev, "things/dev2/x").getName() == "Not authorized"
        assert publish_v5(dev, "$aws/things/dev2/jobs/start-next").getName() == "Not authorized"
        assert publish_v5(dev, "elsewhere").getName() == "Not authorized"
        # only what the device policy (upcert.policy) names: its jobs, not its shadow; the
        # stand-in's templates, not another; CreateCertificateFromCsr, not CreateKeysAndCertificate
        assert not publish_v5(dev, "$aws/things/dev1/jobs/start-next").is_failure
        for topic in ("$aws/things/dev1/shadow/update",
                      "$aws/provisioning-templates/factory/provision/json",
                      "$aws/certificates/create/json",
                      "$aws/certificates/create-from-csr/json/accepted"):
            assert publish_v5(dev, topic).getName() == "Not authorized", topic
    finally:
        close(dev)


def test_claim_identity_gets_the_claim_policy_only(ca, tmp_path):
    # A CN listed in claim_cns may call CreateCertificateFromCsr and the claim template, and
    # nothing of a device: not even the things/ topics of its own CN.
    cert, key = identity(ca, tmp_path, "claim-1")
    with Cloud(tmp_path / "cloud", ca, services=False,
               templates=("upcert-rotation", "upcert-claim"), claim_cns=("claim-1",)) as c:
        dev = c.client("claim-1", cert, key, protocol=mqtt.MQTTv5)
        try:
            for topic in ("$aws/certificates/create-from-csr/json",
                          "$aws/provisioning-templates/upcert-claim/provision/json"):
                assert not publish_v5(dev, topic).is_failure, topic
            for topic in ("things/claim-1/telemetry", "$aws/things/claim-1/jobs/start-next",
                          "$aws/provisioning-templates/upcert-rotation/provision/json"):
                assert publish_v5(dev, topic).getName() == "Not authorized", topic
        finally:
            close(dev)
        other, okey = identity(ca, tmp_path, "dev9")  # a device there keeps the device policy
        dev = c.client("dev9", other, okey, protocol=mqtt.MQTTv5)
        try:
            assert not publish_v5(dev, "things/dev9/telemetry").is_failure
            assert publish_v5(dev, "$aws/provisioning-templates/upcert-claim/provision/json"
                              ).getName() == "Not authorized"
        finally:
            close(dev)


def test_device_does_not_receive_another_things_messages(cloud, ca, tmp_path):
    # mosquitto's acl_file grants every SUBACK and checks "read" on each delivery (AWS refuses
    # the subscription itself); either way nothing of dev2's reaches dev1.
    cert, key = identity(ca, tmp_path, "dev1")
    dev = cloud.client("dev1", cert, key)
    subscribed, received = threading.Event(), []
    dev.on_subscribe = lambda *a: subscribed.set()
    dev.on_message = lambda c, u, m: received.append(m.topic)
    admin = cloud.admin_client()
    try:
        dev.subscribe([("things/dev2/#", 1), ("things/dev1/#", 1), ("#", 1)])
        assert subscribed.wait(5)
        with Subscription(cloud, "things/#") as sub:
            for topic in ("things/dev2/commands", "other/x", "things/dev1/commands"):
                admin.publish(topic, b"x", qos=1).wait_for_publish(5)
            sub.wait_for(lambda m: m.topic == "things/dev1/commands", timeout_s=5)
        # One publisher, published in order: mosquitto would have delivered dev2's message
        # (and other/x) to dev1 before its own, the last one.
        wait_until(lambda: "things/dev1/commands" in received, 5, "dev1's own message")
        assert set(received) == {"things/dev1/commands"}
    finally:
        close(dev)
        close(admin)


@pytest.mark.parametrize("request_topic", [
    "$aws/certificates/create-from-csr/json",
    "$aws/provisioning-templates/upcert-rotation/provision/json",
])
def test_fleet_provisioning_topics(cloud, ca, tmp_path, request_topic):
    # a thing ("claim-" CNs are claims: tests/host/test_claim_service.py, test_claim_e2e.py)
    cert, key = identity(ca, tmp_path, "fp-1")
    dev = cloud.client("fp-1", cert, key)
    got = threading.Event()
    dev.on_message = lambda c, u, m: got.set()
    admin = cloud.admin_client()
    try:
        with Subscription(cloud, request_topic + "/#") as service:
            dev.subscribe(request_topic + "/accepted", 1)
            dev.publish(request_topic + "/accepted", b"spoofed", qos=1).wait_for_publish(5)
            dev.publish(request_topic, b"{}", qos=1).wait_for_publish(5)
            assert service.wait_for(timeout_s=5).topic == request_topic
            assert [m.topic for m in service.messages] == [request_topic]  # no spoofed reply
            admin.publish(request_topic + "/accepted", b"{}", qos=1).wait_for_publish(5)
            assert got.wait(5), "the device did not receive the service's reply"
    finally:
        close(dev)
        close(admin)


def test_jobs_topics_of_own_thing(cloud, ca, tmp_path):
    cert, key = identity(ca, tmp_path, "dev1")
    dev = cloud.client("dev1", cert, key, protocol=mqtt.MQTTv5)
    try:
        with Subscription(cloud, "$aws/things/+/jobs/#") as sub:
            assert publish_v5(dev, "$aws/things/dev1/jobs/start-next").value == 0
            assert sub.wait_for(timeout_s=5).topic == "$aws/things/dev1/jobs/start-next"
    finally:
        close(dev)


# --- TLS policy -----------------------------------------------------------------------------


def test_tls12_with_device_certificate_works(cloud, ca, tmp_path):
    cert, key = identity(ca, tmp_path, "dev1")
    assert handshake(cloud, cert, key) == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")


def test_client_without_certificate_is_refused(cloud, ca, tmp_path):
    with pytest.raises(ssl.SSLError):
        handshake(cloud)
    with pytest.raises(CloudError, match="cannot connect"):
        cloud.client("anon", None, None)
    assert "peer did not return a certificate" in cloud.log_text()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_3])
def test_other_tls_versions_are_refused(cloud, ca, tmp_path, version):
    cert, key = identity(ca, tmp_path, "dev1")
    ciphers = "DEFAULT:@SECLEVEL=0" if version == ssl.TLSVersion.TLSv1_1 else None
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL"):
        handshake(cloud, cert, key, versions=(version, version), ciphers=ciphers)


@pytest.mark.parametrize("cipher", ["ECDHE-RSA-CHACHA20-POLY1305", "DHE-RSA-AES128-GCM-SHA256",
                                    "ECDHE-RSA-CAMELLIA128-SHA256"])
def test_ciphers_outside_the_aws_list_are_refused(cloud, ca, tmp_path, cipher):
    cert, key = identity(ca, tmp_path, "dev1")
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        handshake(cloud, cert, key, ciphers=cipher + ":@SECLEVEL=0")


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_every_aws_cipher_for_the_server_key_works(tmp_path, key_type):
    ca = LocalCa.init(tmp_path / "ca", key_type=key_type)
    cert, key = identity(ca, tmp_path, "dev1")
    usable = [c for c in AWS_TLS12_CIPHERS
              if ("ECDSA" in c) == (key_type == "ec") and (key_type == "rsa" or "ECDHE" in c)]
    assert len(usable) == (12 if key_type == "rsa" else 6)
    with Cloud(tmp_path / "cloud", ca) as cloud:
        for cipher in usable:
            assert handshake(cloud, cert, key, ciphers=cipher + ":@SECLEVEL=0")[1] == cipher


def test_certificate_from_another_ca_is_refused(cloud, tmp_path):
    stranger = LocalCa.init(tmp_path / "stranger", key_type="rsa")
    cert, key = identity(stranger, tmp_path, "dev1")
    with pytest.raises(ssl.SSLError, match="UNKNOWN_CA"):
        handshake(cloud, cert, key)


def test_expired_certificate_is_refused(cloud, ca, tmp_path):
    now = datetime.datetime.now(datetime.timezone.utc)
    cert, key = identity(ca, tmp_path, "dev1", not_before=now - datetime.timedelta(days=9),
                         not_after=now - datetime.timedelta(days=1))
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_EXPIRED"):
        handshake(cloud, cert, key)


def test_sha1_signed_certificate_is_refused(cloud, ca, tmp_path):
    # AWS IoT accepts no SHA-1 signatures; cryptography will not make one, so openssl does.
    write_private_key(tmp_path / "d.key", generate_key("rsa"))
    openssl = require("openssl")
    subprocess.run([openssl, "req", "-new", "-key", tmp_path / "d.key", "-subj", "/CN=dev1",
                    "-out", tmp_path / "d.csr"], check=True, capture_output=True)
    subprocess.run([openssl, "x509", "-req", "-sha1", "-in", tmp_path / "d.csr", "-CA",
                    ca.ca_pem, "-CAkey", ca.ca_key, "-days", "30", "-set_serial", "9", "-out",
                    tmp_path / "d.pem"], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client present it at all
    ctx.load_verify_locations(ca.ca_pem)
    ctx.load_cert_chain(tmp_path / "d.pem", tmp_path / "d.key")
    with socket.create_connection((cloud.host, cloud.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError, match="BAD_CERTIFICATE"):
            ctx.wrap_socket(raw, server_hostname=cloud.endpoint)


def test_no_plaintext_listener(cloud):
    log = cloud.log_text()
    # one listener, ours: a listener option above `listener` would add a plaintext one on 1883
    assert re.findall(r"Opening \S+ listen socket on port (\d+)\.", log) == [str(cloud.port)]
    with socket.create_connection((cloud.host, cloud.port), timeout=5) as s:
        s.sendall(b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04anon")  # plain MQTT CONNECT
        s.settimeout(5)
        try:
            reply = s.recv(4)
        except ConnectionResetError:
            reply = b""
        assert not reply.startswith(b"\x20")  # no CONNACK, only the end of the connection


def test_server_certificate_override(ca, tmp_path):
    cert, key = ca.issue_server(["elsewhere.example"])
    write_certificate(tmp_path / "s.pem", cert)
    write_private_key(tmp_path / "s.key", key)
    with Cloud(tmp_path / "cloud", ca, server_cert=tmp_path / "s.pem",
               server_key=tmp_path / "s.key") as cloud:
        with pytest.raises(CloudError, match="(?i)cannot connect.*hostname mismatch"):
            cloud.admin_client()
        assert Cloud.load(cloud.state_dir, ca).server_cert == tmp_path / "s.pem"


# --- life cycle -----------------------------------------------------------------------------


def test_restart_keeps_the_port_and_down_stops(ca, tmp_path):
    cloud = Cloud(tmp_path, ca).up()
    port, pid = cloud.port, cloud.status()["broker_pid"]
    cloud.restart()
    new_pid = cloud.status()["broker_pid"]
    assert cloud.port == port and new_pid != pid and cloud.is_running()
    close(cloud.admin_client())
    cloud.down()
    assert not cloud.is_running() and not cloud.pid_path.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(new_pid, 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((cloud.host, port), timeout=2).close()
    cloud.down()  # idempotent


def test_another_process_starts_and_this_one_stops(ca, tmp_path):
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from upcert.pki.ca import LocalCa\nfrom upcert.cloud.standin import Cloud\n"
              f"Cloud({str(tmp_path / 'cloud')!r}, LocalCa.load({str(ca.directory)!r})).up()\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    cloud = Cloud.load(tmp_path / "cloud", ca)
    assert cloud.is_running()
    close(cloud.admin_client())
    cloud.down()
    assert not cloud.is_running() and not Cloud.load(tmp_path / "cloud", ca).is_running()


def test_port_in_use_is_reported(ca, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cloud = Cloud(tmp_path, ca, port=busy.getsockname()[1])
        with pytest.raises(CloudError, match="(?s)mosquitto exited.*in use"):
            cloud.up()
        assert not cloud.is_running()


def test_missing_pieces_are_explained(ca, tmp_path, monkeypatch):
    with pytest.raises(CloudError, match="no local cloud in .*`upcert cloud up`"):
        Cloud.load(tmp_path / "none", ca)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cloud.json").write_text("{}")
    with pytest.raises(CloudError, match="cloud.json is corrupt"):
        Cloud.load(tmp_path / "bad", ca)
    with pytest.raises(CloudError, match=r"missing: run `upcert ca init`"):
        Cloud(tmp_path, ca, server_cert=tmp_path / "none.pem").up()
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a normal user's PATH, without sbin
    assert cloud_mod.find_mosquitto().endswith("/mosquitto")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(cloud_mod, "_MOSQUITTO_PATHS", ())
    with pytest.raises(CloudError, match=r"mosquitto not found: run `make setup`"):
        Cloud(tmp_path, ca).up()


def test_subscription_timeout_says_what_arrived(cloud):
    with Subscription(cloud, "things/quiet/#") as sub:
        with pytest.raises(CloudError, match="no matching message on things/quiet/# within"):
            sub.wait_for(timeout_s=0.3)
