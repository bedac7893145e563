"""Tests for the rotation side of the local AWS IoT stand-in against a real mosquitto with the
identity plugin, real TLS and the provisioning service process: Fleet Provisioning over MQTT,
replies that reach only the requester, certificate status enforced by the broker, Jobs, and
the fault modes that answer badly on purpose (upcert.cloud.faults, `upcert cloud up --fault`).
"""

import datetime
import json
import os
import queue
import re
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from upcert.cloud import admin, daemon, jobs, limits, plugin
from upcert.cloud import service as provisioning
from upcert.cloud.registry import Registry, RegistryError
from upcert.cloud.standin import Cloud
from upcert.errors import UpcertError
from upcert.pki.ca import LocalCa
from upcert.pki.certs import cert_id, generate_key, write_certificate, write_private_key

from tests.tools import require_plugin_build, wait_until

CSR_TOPIC = "$aws/certificates/create-from-csr/json"
PROVISION_TOPIC = "$aws/provisioning-templates/upcert-rotation/provision/json"


@pytest.fixture(scope="module", autouse=True)
def _components():
    require_plugin_build()


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return LocalCa.init(tmp_path_factory.mktemp("ca"), key_type="rsa")


@pytest.fixture(scope="module")
def cloud(ca, tmp_path_factory):
    with Cloud(tmp_path_factory.mktemp("cloud"), ca, cert_validity="10m") as c:
        yield c


@pytest.fixture(scope="module")
def registry(cloud):
    return Registry(cloud.registry_path)


def identity(ca, tmp_path, thing):
    """(certificate, certfile, keyfile) for a thing, issued by ca."""
    key = generate_key()
    cert = ca.issue_device(thing, key.public_key())
    certfile, keyfile = tmp_path / f"{thing}.pem", tmp_path / f"{thing}.key"
    write_private_key(keyfile, key)
    write_certificate(certfile, cert)
    return cert, certfile, keyfile


def make_csr(cn, key=None):
    key = key or generate_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


class Device:
    """A paho client with a device identity that keeps what it receives."""

    def __init__(self, cloud, thing, certfile, keyfile, client_id=None):
        self.inbox = queue.Queue()
        self.dropped = threading.Event()
        self.client = cloud.client(client_id or thing, certfile, keyfile)
        self.client.on_message = lambda c, u, m: self.inbox.put(m)
        self.client.on_disconnect = lambda *a: self.dropped.set()

    def subscribe(self, *topics):
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe([(t, 1) for t in topics])
        assert done.wait(5), "no SUBACK"

    def wait(self, predicate, timeout_s=10):
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                m = self.inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"nothing matching within {timeout_s} s") from None
            if predicate(m):
                return m

    def request(self, topic, body, timeout_s=10):
        """("accepted" | "rejected", reply payload) for a request."""
        self.subscribe(topic + "/accepted", topic + "/rejected")
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.client.publish(topic, raw, qos=1).wait_for_publish(5)
        m = self.wait(lambda m: m.topic.rsplit("/", 1)[0] == topic, timeout_s)
        return m.topic.rsplit("/", 1)[1], m.payload

    def json_request(self, topic, body, timeout_s=10):
        outcome, payload = self.request(topic, body, timeout_s)
        return outcome, json.loads(payload)

    def topics_before(self, marker, timeout_s=10):
        """Topics received before the first message on `marker`, which the test has something
        send once whatever must not arrive has had its chance (to show that nothing came).
        mosquitto handles one packet at a time and queues to each client in that order, so a
        message it was sending here before the marker's PUBLISH arrives ahead of the marker."""
        seen = []
        self.wait(lambda m: seen.append(m.topic) or m.topic == marker, timeout_s)
        return seen[:-1]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def device(cloud, ca, tmp_path):
    made = []

    def make(thing, **kwargs):
        _, certfile, keyfile = identity(ca, tmp_path, thing)
        made.append(Device(cloud, thing, certfile, keyfile, **kwargs))
        return made[-1]

    yield make
    for d in made:
        d.close()


def handshake(cloud, certfile, keyfile):
    """A raw TLS handshake with the broker; raises ssl.SSLError when refused."""
    ctx = cloud.tls_context(certfile, keyfile)
    with socket.create_connection((cloud.host, cloud.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=cloud.endpoint) as tls:
            tls.recv(0)


# --- Fleet Provisioning ---------------------------------------------------------------------


def test_rotation_happy_path(cloud, ca, registry, device, tmp_path):
    dev = device("rot1")
    csr_pem, new_key = make_csr("rot1", ec.generate_private_key(ec.SECP256R1()))
    outcome, reply = dev.json_request(CSR_TOPIC, {"certificateSigningRequest": csr_pem})
    assert outcome == "accepted", reply
    assert set(reply) == {"certificateId", "certificatePem", "certificateOwnershipToken"}
    cert = x509.load_pem_x509_certificate(reply["certificatePem"].encode())
    assert reply["certificateId"] == cert_id(cert)  # sha256 of the DER
    cert.verify_directly_issued_by(ca.certificate)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        new_key.public_key().public_bytes(serialization.Encoding.DER, spki)
    assert cert.subject.rfc4514_string() == "CN=rot1"
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(minutes=9) < lifetime <= datetime.timedelta(minutes=10)
    assert registry.get(reply["certificateId"])["status"] == "PENDING_ACTIVATION"

    certfile, keyfile = tmp_path / "new.pem", tmp_path / "new.key"
    certfile.write_text(reply["certificatePem"])
    write_private_key(keyfile, new_key)
    with pytest.raises(ssl.SSLError, match="REVOKED"):  # AWS: not usable before RegisterThing
        handshake(cloud, certfile, keyfile)

    outcome, reply2 = dev.json_request(PROVISION_TOPIC, {
        "certificateOwnershipToken": reply["certificateOwnershipToken"], "parameters": {}})
    assert (outcome, reply2) == ("accepted", {"deviceConfiguration": {}, "thingName": "rot1"})
    record = registry.get(reply["certificateId"])
    assert record["status"] == "ACTIVE" and record["attached"] and record["thing"] == "rot1"
    dev.close()  # one connection per client id: the new identity connects as rot1 too
    Device(cloud, "rot1", certfile, keyfile).close()  # the new identity


def test_csr_for_another_thing_is_forbidden(registry, device):
    dev = device("rot2")
    outcome, reply = dev.json_request(CSR_TOPIC, {"certificateSigningRequest": make_csr("victim")[0]})
    assert outcome == "rejected" and reply["statusCode"] == 403
    assert reply["errorCode"] == "Forbidden" and "renew only its own" in reply["errorMessage"]
    assert registry.list(thing="victim") == []


def _tampered_csr():
    pem, _ = make_csr("rot3")
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x55  # inside the signature
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("body, code, words", [
    ({"certificateSigningRequest": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"}, "InvalidCsr",
     "not a PEM certificate signing request"),
    ({}, "InvalidCsr", "certificateSigningRequest is missing"),
    ("tampered", "InvalidCsr", "signature does not verify"),
    ("rsa1024", "InvalidCsr", "RSA-1024.*is not accepted"),
    ("p521", "InvalidCsr", "secp521r1.*is not accepted"),
    (b"not json", "InvalidPayload", "not UTF-8 JSON"),
])
def test_bad_csr_is_rejected(device, body, code, words):
    if body == "tampered":
        body = {"certificateSigningRequest": _tampered_csr()}
    elif body == "rsa1024":
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        body = {"certificateSigningRequest": make_csr("rot3", key)[0]}
    elif body == "p521":
        body = {"certificateSigningRequest": make_csr("rot3", ec.generate_private_key(
            ec.SECP521R1()))[0]}
    outcome, reply = device("rot3").json_request(CSR_TOPIC, body)
    assert outcome == "rejected" and reply["statusCode"] == 400
    assert reply["errorCode"] == code and re.search(words, reply["errorMessage"]), reply


def test_cbor_requests_get_a_cbor_rejection(device):
    outcome, payload = device("rot4").request("$aws/certificates/create-from-csr/cbor", b"\xa0")
    assert outcome == "rejected"
    assert payload[0] == 0xA3 and b"statusCode" in payload and b"InvalidPayload" in payload
    assert b"publish JSON to $aws/certificates/create-from-csr/json" in payload


def test_reply_reaches_only_the_requester(cloud, device):
    asker, other = device("leak1"), device("leak2")
    other.subscribe(CSR_TOPIC + "/accepted", CSR_TOPIC + "/rejected", "#")
    observer = cloud.admin_client()  # even the host's own identity sees no reply
    seen, subscribed = [], threading.Event()
    observer.on_message = lambda c, u, m: seen.append(m.topic)
    observer.on_subscribe = lambda *a: subscribed.set()
    marker = "things/leak2/marker"  # `other` may read it (its own things/ topics)
    observer.subscribe([("$aws/#", 1), (marker, 1)])
    assert subscribed.wait(5)
    try:
        outcome, reply = asker.json_request(CSR_TOPIC, {"certificateSigningRequest":
                                                        make_csr("leak1")[0]})
        assert outcome == "accepted" and reply["certificateOwnershipToken"]
        # The reply has passed through the broker: a copy of it to anyone else was queued
        # before the marker published now (Device.topics_before).
        observer.publish(marker, b"", qos=1).wait_for_publish(5)
        assert other.topics_before(marker) == []  # no ownership token, no upcert/from copy
        wait_until(lambda: marker in seen, 5, "the marker at the observer")
        assert seen == [CSR_TOPIC, marker]  # the request, as AWS's own topic; never the reply
    finally:
        observer.disconnect()
        observer.loop_stop()


def test_provision_refusals(cloud, device, registry):
    dev, other = device("prov1"), device("prov2")
    _, reply = dev.json_request(CSR_TOPIC, {"certificateSigningRequest": make_csr("prov1")[0]})
    token = reply["certificateOwnershipToken"]

    outcome, r = dev.json_request(PROVISION_TOPIC, {"certificateOwnershipToken": "forged"})
    assert (outcome, r["statusCode"], r["errorCode"]) == (
        "rejected", 400, "InvalidCertificateOwnershipToken")
    outcome, r = other.json_request(PROVISION_TOPIC, {"certificateOwnershipToken": token})
    assert (outcome, r["statusCode"], r["errorCode"]) == ("rejected", 403, "Forbidden")
    # A template the device policy does not name (upcert.policy): the broker refuses the
    # request, as AWS's policy check does before any template is looked up, so it never
    # reaches the service. The host's identity, subscribed to it, sees only a marker published
    # after the device's request was acknowledged (mosquitto delivers in that order).
    nope, marker = "$aws/provisioning-templates/nope/provision/json", "things/prov1/marker"
    admin, seen, subscribed = cloud.admin_client(), [], threading.Event()
    admin.on_message = lambda c, u, m: seen.append(m.topic)
    admin.on_subscribe = lambda *a: subscribed.set()
    admin.subscribe([(nope, 1), (marker, 1)])
    try:
        assert subscribed.wait(5)
        dev.client.publish(nope, json.dumps({"certificateOwnershipToken": token}), qos=1
                           ).wait_for_publish(5)
        admin.publish(marker, b"", qos=1).wait_for_publish(5)
        wait_until(lambda: marker in seen, 5, "the marker")
        assert seen == [marker]
    finally:
        admin.disconnect()
        admin.loop_stop()
    outcome, r = dev.json_request(PROVISION_TOPIC, {"certificateOwnershipToken": token,
                                                    "parameters": {"ThingName": "prov2"}})
    assert (outcome, r["errorCode"]) == ("rejected", "Forbidden")

    expired = registry.issue_token(reply["certificateId"], now=time.time() - 7200)
    outcome, r = dev.json_request(PROVISION_TOPIC, {"certificateOwnershipToken": expired})
    assert (outcome, r["errorCode"]) == ("rejected", "InvalidCertificateOwnershipToken")
    # "has expired" (test_registry), or "is not valid" once the service has deleted the
    # certificate, as AWS does when its token expires (test_standin_hardening)
    assert re.search("expired|not valid", r["errorMessage"]), r
    record = registry.get(reply["certificateId"])
    assert record is None or record["status"] == "PENDING_ACTIVATION"


# --- status enforced by the broker -----------------------------------------------------------


@pytest.mark.parametrize("status", ["INACTIVE", "REVOKED"])
def test_status_change_refuses_and_kicks(cloud, ca, registry, tmp_path, status):
    thing = f"kick-{status.lower()}"
    cert, certfile, keyfile = identity(ca, tmp_path, thing)
    cid = registry.register(cert)["cert_id"]
    # another thing's connection (a thing has one connection: client id = its name)
    bystander = Device(cloud, f"{thing}-by", *identity(ca, tmp_path, f"{thing}-by")[1:])
    dev = Device(cloud, thing, certfile, keyfile)
    try:
        dev.subscribe(f"$aws/things/{thing}/jobs/notify-next")  # any first packet
        bystander.subscribe(f"$aws/things/{thing}-by/jobs/notify-next")
        handshake(cloud, certfile, keyfile)
        record = admin.set_certificate_status(cloud.state_dir, cid[:12], status)
        assert record["status"] == status
        assert dev.dropped.wait(5), "the open connection was not closed"
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REVOKED"):
            handshake(cloud, certfile, keyfile)
        assert not bystander.dropped.is_set()  # only connections of that certificate go
        assert "uses a certificate listed in the CRL" in cloud.log_text()
        if status == "INACTIVE":  # INACTIVE can come back, REVOKED cannot (AWS)
            admin.set_certificate_status(cloud.state_dir, cid, "ACTIVE")
            handshake(cloud, certfile, keyfile)
        else:
            with pytest.raises(RegistryError, match="final"):
                admin.set_certificate_status(cloud.state_dir, cid, "ACTIVE")
    finally:
        dev.close()
        bystander.close()


def test_unregistered_certificates_are_accepted(cloud, ca, tmp_path):
    # a deny-list: the CRL names what is not ACTIVE; AWS would refuse an unknown certificate
    _, certfile, keyfile = identity(ca, tmp_path, "never-registered")
    handshake(cloud, certfile, keyfile)


# --- jobs -----------------------------------------------------------------------------------


def test_rotation_job_round_trip(cloud, device):
    dev = device("job1")
    base = jobs.prefix("job1")
    dev.subscribe(base + "notify-next")
    outcome, r = dev.json_request(base + "start-next", {"clientToken": "t0"})
    assert outcome == "accepted" and "execution" not in r and r["clientToken"] == "t0"

    job_id = admin.create_rotation_job(cloud.state_dir, "job1")
    event = json.loads(dev.wait(lambda m: m.topic == base + "notify-next", 5).payload)
    assert event["execution"]["jobId"] == job_id
    assert event["execution"]["jobDocument"] == {"operation": "rotate-certificate"}

    outcome, r = dev.json_request(base + "start-next", {"statusDetails": {"step": "csr"}})
    ex = r["execution"]
    assert outcome == "accepted" and (ex["jobId"], ex["status"], ex["versionNumber"]) == (
        job_id, "IN_PROGRESS", 2)
    assert ex["statusDetails"] == {"step": "csr"} and ex["thingName"] == "job1"

    outcome, r = dev.json_request(f"{base}{job_id}/update", {
        "status": "SUCCEEDED", "expectedVersion": 2, "includeJobExecutionState": True,
        "clientToken": "t1"})
    assert outcome == "accepted" and r["executionState"]["status"] == "SUCCEEDED"
    assert r["clientToken"] == "t1" and isinstance(r["timestamp"], int)
    event = json.loads(dev.wait(lambda m: m.topic == base + "notify-next", 5).payload)
    assert "execution" not in event  # nothing pending any more

    outcome, r = dev.json_request(f"{base}{job_id}/update", {"status": "IN_PROGRESS"})
    assert outcome == "rejected" and r["code"] == "InvalidStateTransition"
    assert r["executionState"]["status"] == "SUCCEEDED"


def test_job_update_version_mismatch(cloud, device):
    dev = device("job2")
    base = jobs.prefix("job2")
    job_id = admin.create_rotation_job(cloud.state_dir, "job2")
    dev.json_request(base + "start-next", {})
    outcome, r = dev.json_request(f"{base}{job_id}/update", {"status": "FAILED",
                                                             "expectedVersion": 1})
    assert outcome == "rejected" and r["code"] == "VersionMismatch"
    assert r["executionState"] == {"status": "IN_PROGRESS", "statusDetails": {},
                                   "versionNumber": 2}
    outcome, r = dev.json_request(base + "x/y", {})
    assert outcome == "rejected" and r["code"] == "InvalidTopic"
    outcome, r = dev.json_request(base + "start-next", b"{nope")
    assert outcome == "rejected" and r["code"] == "InvalidJson"


def test_jobs_describe_and_list(registry):
    registry.create_job("job3", {"a": 1}, job_id="d1")
    registry.create_job("job3", {"a": 2}, job_id="d2")
    registry.start_next("job3")
    [(topic, body)] = jobs.handle(registry, "job3", "get", b"", now=5)
    assert topic == "$aws/things/job3/jobs/get/accepted" and body["timestamp"] == 5
    assert [j["jobId"] for j in body["inProgressJobs"]] == ["d1"]
    assert [j["jobId"] for j in body["queuedJobs"]] == ["d2"]
    [(_, body)] = jobs.handle(registry, "job3", "$next/get", b'{"includeJobDocument": false}')
    assert body["execution"]["jobId"] == "d1" and "jobDocument" not in body["execution"]
    [(topic, body)] = jobs.handle(registry, "job4", "d1/get", b"")
    assert topic.endswith("/rejected") and body["code"] == "ResourceNotFound"
    assert jobs.handle(registry, "job3", "start-next/accepted", b"") == []


# --- the processes and their configuration ------------------------------------------------


def test_up_starts_the_service_and_down_stops_it(ca, tmp_path):
    c = Cloud(tmp_path / "c", ca).up()
    try:
        assert daemon.service_running(c.state_dir)
        pid = int((c.state_dir / "provisioning.pid").read_text())
        assert "ready" in (c.state_dir / "provisioning.log").read_text()
        Cloud.from_state(c.state_dir).down()  # as `upcert cloud down` in another process
        assert not daemon.service_running(c.state_dir) and not c.is_running()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        c.down()


def test_service_trusts_a_server_certificate_from_another_ca(ca, tmp_path):
    # tests start brokers with foreign server certificates; the service must still connect
    other = LocalCa.init(tmp_path / "other", key_type="ec")
    with Cloud(tmp_path / "c", ca, server_cert=other.server_pem,
               server_key=other.server_key) as c:
        assert daemon.service_running(c.state_dir)


def test_bare_broker_has_no_services(ca, tmp_path):
    with Cloud(tmp_path / "c", ca, services=False) as c:
        assert not daemon.service_running(c.state_dir)
        conf = c.conf_path.read_text()
        assert "plugin" not in conf
        assert "use_identity_as_username true" in conf  # without the plugin, mosquitto's CN
        with pytest.raises(admin.AdminError, match="runs without services"):
            admin.set_certificate_status(c.state_dir, "0" * 64, "INACTIVE")


def test_bad_settings_are_explained(ca, tmp_path):
    with pytest.raises(limits.SettingError, match="'10x' is not valid.*10m"):
        Cloud(tmp_path, ca, cert_validity="10x")
    assert limits.parse_validity("90s") == datetime.timedelta(seconds=90)
    assert limits.parse_validity("365d") == datetime.timedelta(days=365)
    with pytest.raises(admin.AdminError, match="no local cloud in"):
        admin.list_certificates(tmp_path / "none")
    with pytest.raises(plugin.PluginError, match="cannot run the C compiler"):
        plugin.build_plugin(tmp_path / "p", cc=str(tmp_path / "no-gcc"))


def test_plugin_is_rebuilt_only_when_stale(tmp_path, monkeypatch):
    so = plugin.build_plugin(tmp_path)
    first = so.stat().st_mtime_ns
    assert plugin.build_plugin(tmp_path).stat().st_mtime_ns == first  # fresh: kept
    (tmp_path / "upcert_identity.sha256").write_text("old\n")  # other source or flags
    assert plugin.build_plugin(tmp_path).stat().st_mtime_ns != first
    src = tmp_path / "broken.c"
    src.write_text('#include <no_such_header.h>\n')
    monkeypatch.setattr(plugin, "SOURCE", src)
    with pytest.raises(plugin.PluginError, match="cannot build broken.c"):
        plugin.build_plugin(tmp_path / "b")


def test_job_succeeded_with_new_certificate_retires_the_old_one(cloud, ca, registry, device,
                                                               tmp_path):
    dev = device("job3")
    base = jobs.prefix("job3")
    old = registry.register(identity(ca, tmp_path, "job3")[0], "job3")
    new = registry.register(identity(ca, tmp_path, "job3")[0], "job3")
    other = registry.register(identity(ca, tmp_path, "job4")[0], "job4")
    job_id = admin.create_rotation_job(cloud.state_dir, "job3")
    dev.json_request(base + "start-next", {})
    # A report naming another thing's certificate changes nothing.
    outcome, _ = dev.json_request(f"{base}{job_id}/update", {
        "status": "IN_PROGRESS", "statusDetails": {"oldCertificateId": other["cert_id"],
                                                   "newCertificateId": new["cert_id"]}})
    assert outcome == "accepted" and registry.get(other["cert_id"])["status"] == "ACTIVE"
    outcome, _ = dev.json_request(f"{base}{job_id}/update", {
        "status": "SUCCEEDED", "statusDetails": {"oldCertificateId": old["cert_id"],
                                                 "newCertificateId": new["cert_id"]}})
    assert outcome == "accepted"
    assert registry.get(old["cert_id"])["status"] == "INACTIVE"
    assert registry.get(new["cert_id"])["status"] == "ACTIVE"
    assert registry.get(other["cert_id"])["status"] == "ACTIVE"


# --- fault modes (upcert.cloud.faults): the service answers badly on purpose ---------------------


def _ask(ca, tmp_path, fault, thing="flt1", key=None):
    """(outcome, reply dict, CSR key, Provisioner) for one CreateCertificateFromCsr handled by a
    Provisioner with the fault (no MQTT)."""
    prov = provisioning.Provisioner(ca, Registry(tmp_path / "faults.sqlite3"), fault=fault)
    pem, key = make_csr(thing, key)
    out, _ = prov.handle(f"{provisioning.FROM}{thing}/{CSR_TOPIC}",
                         json.dumps({"certificateSigningRequest": pem}).encode())
    if not out:
        return None, None, key, prov
    [(topic, data)] = out
    return topic.rsplit("/", 1)[1], json.loads(data), key, prov


def _spki(key):
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _issuer_key_id(cert):
    """The authority key identifier: the SHA-1 of the issuer's public key (RFC 5280 §4.2.1.1,
    as pki.ca writes it)."""
    return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value \
        .key_identifier


def test_no_fault_issues_for_the_csr_key(ca, tmp_path):
    outcome, reply, key, _ = _ask(ca, tmp_path, None)
    cert = x509.load_pem_x509_certificate(reply["certificatePem"].encode())
    assert outcome == "accepted" and _spki(cert.public_key()) == _spki(key.public_key())


def test_fault_wrong_key(ca, tmp_path):
    outcome, reply, key, prov = _ask(ca, tmp_path, "wrong-key")
    cert = x509.load_pem_x509_certificate(reply["certificatePem"].encode())
    assert outcome == "accepted" and reply["certificateId"] == cert_id(cert)
    cert.verify_directly_issued_by(ca.certificate)  # a good certificate, for another key
    assert _spki(cert.public_key()) != _spki(key.public_key())
    assert prov.registry.get(reply["certificateId"])["status"] == "PENDING_ACTIVATION"


def test_fault_expired(ca, tmp_path):
    outcome, reply, key, _ = _ask(ca, tmp_path, "expired")
    cert = x509.load_pem_x509_certificate(reply["certificatePem"].encode())
    now = datetime.datetime.now(datetime.timezone.utc)
    assert outcome == "accepted" and _spki(cert.public_key()) == _spki(key.public_key())
    assert cert.not_valid_before_utc < cert.not_valid_after_utc < now - datetime.timedelta(
        minutes=59)


def test_fault_other_issuer(ca, tmp_path):
    outcome, reply, key, prov = _ask(ca, tmp_path, "other-issuer")
    cert = x509.load_pem_x509_certificate(reply["certificatePem"].encode())
    assert outcome == "accepted" and _spki(cert.public_key()) == _spki(key.public_key())
    assert cert.issuer == ca.certificate.subject  # same name ...
    with pytest.raises(InvalidSignature):  # ... another key
        cert.verify_directly_issued_by(ca.certificate)
    pem2, _ = make_csr("flt1")
    [(_, data)], _ = prov.handle(f"{provisioning.FROM}flt1/{CSR_TOPIC}",
                                 json.dumps({"certificateSigningRequest": pem2}).encode())
    cert2 = x509.load_pem_x509_certificate(json.loads(data)["certificatePem"].encode())
    # One impostor per service: both certificates name the same issuer key, not the CA's.
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca.certificate.public_key()).digest
    assert _issuer_key_id(cert) == _issuer_key_id(cert2) != ca_ski
    with pytest.raises(InvalidSignature):
        cert2.verify_directly_issued_by(ca.certificate)


def test_fault_reject(ca, tmp_path):
    outcome, reply, _, prov = _ask(ca, tmp_path, "reject")
    assert outcome == "rejected" and set(reply) == {"statusCode", "errorCode", "errorMessage"}
    assert (reply["statusCode"], reply["errorCode"]) == (400, "InvalidCsr")
    assert "--fault reject" in reply["errorMessage"] and prov.registry.list() == []


def test_fault_settings_are_checked(ca, tmp_path):
    with pytest.raises(UpcertError, match="unknown fault 'slow': choose one of wrong-key, silent"):
        Cloud(tmp_path, ca, fault="slow")
    with pytest.raises(UpcertError, match="services=False runs none"):
        Cloud(tmp_path, ca, fault="silent", services=False)


def test_fault_silent_through_the_service(ca, tmp_path):
    # the real service process, told by cloud.json: no reply at all, and it says so in its log
    with Cloud(tmp_path / "c", ca, fault="silent") as c:
        assert Cloud.from_state(c.state_dir).fault == "silent"
        outcome, reply, _, prov = _ask(ca, tmp_path, "silent")
        assert (outcome, reply, prov.registry.list()) == (None, None, [])
        _, certfile, keyfile = identity(ca, tmp_path, "flt2")
        dev = Device(c, "flt2", certfile, keyfile)
        try:
            dev.subscribe(CSR_TOPIC + "/accepted", CSR_TOPIC + "/rejected",
                          PROVISION_TOPIC + "/rejected")
            dev.client.publish(CSR_TOPIC, json.dumps(
                {"certificateSigningRequest": make_csr("flt2")[0]}), qos=1).wait_for_publish(5)
            # Then a request the silent service still answers (a forged token: rejected). One
            # connection, one service working through its inbox in order, one client for the
            # replies: an answer to the CSR would reach the device before this rejection.
            dev.client.publish(PROVISION_TOPIC, json.dumps(
                {"certificateOwnershipToken": "forged"}), qos=1).wait_for_publish(5)
            assert dev.topics_before(PROVISION_TOPIC + "/rejected") == []
        finally:
            dev.close()
        log = (c.state_dir / "provisioning.log").read_text()
        assert "FAULT silent" in log and "fault silent: " + CSR_TOPIC + " from flt2" in log


def test_cli_cloud_up_with_a_fault(ca, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "upcert.cli", "cloud", *args, "--dir",
                               str(tmp_path / "c"), "--ca-dir", str(ca.directory)],
                              capture_output=True, text=True, timeout=60)

    up = cli("up", "--fault", "wrong-key")
    try:
        assert up.returncode == 0, up.stderr
        assert "FAULT wrong-key: the provisioning service will issue each certificate for a " \
            "fresh key" in up.stderr
        assert "(fault wrong-key)" in cli("status").stdout
        again = cli("up", "--fault", "silent")
        assert again.returncode == 1
        assert "already runs with fault wrong-key: `upcert cloud down` first" in again.stderr
        assert cli("up", "--fault", "wrong-key").returncode == 0  # same fault: idempotent
    finally:
        cli("down")
    assert cli("up", "--fault", "slow").returncode == 2  # argparse lists the choices
