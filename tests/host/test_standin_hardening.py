"""Hardening of the local AWS IoT stand-in, against a real mosquitto with the identity plugin,
real TLS and the provisioning service process:

- a device connects only under its own client id (= certificate CN), so one thing cannot knock
  another offline by taking its client id (refused with CONNACK 5 before mosquitto would close
  the connected client);
- `upcert cloud up` after a crash comes back on the recorded port and replaces what the crash
  left behind, and `upcert cloud status` reports a dead provisioning service;
- CreateCertificateFromCsr is throttled per thing (429 ThrottlingException) and certificates left
  PENDING_ACTIVATION past their ownership token are deleted, and leave the CRL;
- a certificate a device reports abandoned (job FAILED with abandonedCertificateId, or the
  rotation-abandoned event on things/<thing>/rotation) is set INACTIVE when it is that thing's.

Only APIs that existed before these fixes are used before each behaviour is checked, so that
each test fails on the old stand-in for the reason it exists.
"""

import datetime
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from upcert.cloud import admin, jobs, limits
from upcert.cloud import service as provisioning
from upcert.cloud.registry import Registry
from upcert.cloud.standin import Cloud, CloudError, Subscription
from upcert.pki.ca import ADMIN_CN, LocalCa

from tests.host.test_provisioning import (
    CSR_TOPIC,
    PROVISION_TOPIC,
    Device,
    handshake,
    identity,
    make_csr,
)
from tests.tools import require_plugin_build, wait_until


@pytest.fixture(scope="module", autouse=True)
def _components():
    require_plugin_build()  # mosquitto, gcc and the plugin's headers; fails under CI=true


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return LocalCa.init(tmp_path_factory.mktemp("ca"), key_type="ec")


@pytest.fixture(scope="module")
def cloud(ca, tmp_path_factory):
    with Cloud(tmp_path_factory.mktemp("cloud"), ca) as c:  # default quota and token life
        yield c


@pytest.fixture(scope="module")
def registry(cloud):
    return Registry(cloud.registry_path)


def close(client):
    client.disconnect()
    client.loop_stop()


# --- 1. a device connects only under its own client id ------------------------------------


def raw_connack(cloud, certfile, keyfile, client_id):
    """The bytes of the broker's answer to an MQTT 3.1.1 CONNECT (clean session) as client_id,
    over TLS with the given identity: b"\\x20\\x02\\x00\\x05" is CONNACK 5, not authorized."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    ctx = cloud.tls_context(certfile, keyfile)
    with socket.create_connection((cloud.host, cloud.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=cloud.endpoint) as tls:
            tls.sendall(bytes([0x10, len(body)]) + body)
            data = b""
            while len(data) < 4:
                chunk = tls.recv(4 - len(data))
                if not chunk:
                    break
                data += chunk
            return data


def test_a_thing_cannot_take_another_things_client_id(cloud, ca, tmp_path):
    _, a_cert, a_key = identity(ca, tmp_path, "thing-a")
    victim = Device(cloud, "thing-b", *identity(ca, tmp_path, "thing-b")[1:])
    try:
        with Subscription(cloud, "things/thing-b/#") as sub:
            connack = raw_connack(cloud, a_cert, a_key, "thing-b")  # thing A's certificate
            # mosquitto handles one packet at a time: a kick of the victim would have happened
            # before that CONNACK; the victim's publish then proves its connection is the same
            victim.client.publish("things/thing-b/telemetry", b"still here", qos=1)
            sub.wait_for(lambda m: m.payload == b"still here", timeout_s=10)
            assert not victim.dropped.is_set(), "thing A's CONNECT closed thing B's connection"
            assert connack == b"\x20\x02\x00\x05", connack  # CONNACK 5: not authorized, as AWS
            with pytest.raises(CloudError, match="Not authorized"):  # MQTT 5: reason 0x87
                cloud.client("thing-b", a_cert, a_key, protocol=mqtt.MQTTv5)
            assert not victim.dropped.is_set()
        log = cloud.log_text()
        assert "already connected" not in log
        assert "client id 'thing-b' refused for certificate CN 'thing-a'" in log
        close(cloud.client("thing-a", a_cert, a_key))  # under its own name it connects
        close(cloud.admin_client("any-id-at-all"))  # the host's own identity: any client id
    finally:
        victim.close()


def test_a_username_sent_by_a_device_grants_nothing(cloud, ca, tmp_path):
    # The identity plugin, not mosquitto's use_identity_as_username, now makes the CN the
    # username: whatever username a device sends (here the admin's) is replaced by its CN.
    _, cert, key = identity(ca, tmp_path, "thing-u")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="thing-u",
                    protocol=mqtt.MQTTv5)
    c.username_pw_set(ADMIN_CN, "anything")
    c.tls_set_context(cloud.tls_context(cert, key))
    connected, acks = threading.Event(), {}
    c.on_connect = lambda *a: connected.set()
    c.on_publish = lambda cl, u, mid, rc, p: (acks.__setitem__(mid, rc),)
    c.connect(cloud.endpoint, cloud.port)
    c.loop_start()
    try:
        assert connected.wait(5)
        for topic, allowed in (("things/other/x", False), ("$aws/things/other/jobs/get", False),
                               ("things/thing-u/x", True)):
            info = c.publish(topic, b"x", qos=1)
            wait_until(lambda info=info: info.mid in acks, 5, f"PUBACK for {topic}")
            assert acks[info.mid].is_failure != allowed, (topic, acks[info.mid])
        assert "u'thing-u'" in cloud.log_text()
    finally:
        close(c)


# --- 11. `cloud up` after a crash -------------------------------------------------------------


def cli(state, ca, *args):
    return subprocess.run([sys.executable, "-m", "upcert.cli", "cloud", *args, "--dir",
                           str(state), "--ca-dir", str(ca.directory)],
                          capture_output=True, text=True, timeout=60)


def cli_up(state, ca):
    out = cli(state, ca, "up")
    assert out.returncode == 0, out.stdout + out.stderr
    return int(re.search(r"cloud up: mqtts://[^:\s]+:(\d+)", out.stdout)[1])


def pid_of(state, name):
    return int((state / name).read_text())


def alive(pid, state):
    """True while pid lives (not a zombie) and its command line names this cloud's folder."""
    try:
        st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        args = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return st not in ("Z", "X") and str(state.resolve()).encode() in args


def crash(pid, state):
    """SIGKILL, and wait until the process is gone."""
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid, state), 5, f"pid {pid} gone")


def served(state, ca, tmp_path, thing):
    """A device on the recorded port gets its jobs request answered: a broker listens there
    and a provisioning service answers through it."""
    c = Cloud.load(state, ca)
    dev = Device(c, thing, *identity(ca, tmp_path, thing)[1:])
    try:
        outcome, reply = dev.json_request(jobs.prefix(thing) + "start-next", {}, timeout_s=10)
        assert outcome == "accepted", reply
    finally:
        dev.close()


def cleanup(state, ca, pids):
    cli(state, ca, "down")
    for pid in pids:  # whatever the old stand-in left behind
        if alive(pid, state):
            os.kill(pid, signal.SIGKILL)


def test_cloud_up_after_a_broker_crash_keeps_the_port_and_replaces_the_service(ca, tmp_path):
    state = tmp_path / "cloud"
    port = cli_up(state, ca)
    seen = [pid_of(state, "mosquitto.pid"), pid_of(state, "provisioning.pid")]
    try:
        broker, service = seen
        crash(broker, state)  # the service lives on, connected to nothing
        assert cli_up(state, ca) == port  # where the boards dial
        assert not alive(service, state), "the stale provisioning service still runs"
        seen += [pid_of(state, "mosquitto.pid"), pid_of(state, "provisioning.pid")]
        assert alive(seen[-1], state) and alive(seen[-2], state)
        served(state, ca, tmp_path, "crash1")
        # a service whose pid file is lost is found by its command line, and replaced too
        broker, service = seen[-2:]
        (state / "provisioning.pid").unlink()
        crash(broker, state)
        assert cli_up(state, ca) == port
        assert not alive(service, state), "the provisioning service without a pid file runs on"
        seen += [pid_of(state, "mosquitto.pid"), pid_of(state, "provisioning.pid")]
        served(state, ca, tmp_path, "crash2")
        status = cli(state, ca, "status")
        assert status.returncode == 0 and f"running on localhost:{port}" in status.stdout
    finally:
        cleanup(state, ca, seen)


def test_cloud_status_reports_a_dead_service_and_up_restarts_it(ca, tmp_path):
    state = tmp_path / "cloud"
    port = cli_up(state, ca)
    seen = [pid_of(state, "mosquitto.pid"), pid_of(state, "provisioning.pid")]
    sleeper = None
    try:
        broker, service = seen
        crash(service, state)
        status = cli(state, ca, "status")
        assert status.returncode == 1, status.stdout  # not running: it was "running", rc 0
        assert "running on" not in status.stdout
        st = Cloud.load(state, ca).status()
        assert (st["broker"], st["service"], st["service_pid"]) == ("running", "dead", service)
        assert "provisioning service dead" in Cloud.load(state, ca).status_text()
        assert cli_up(state, ca) == port
        assert pid_of(state, "mosquitto.pid") == broker  # kept: its devices stay connected
        seen.append(pid_of(state, "provisioning.pid"))
        served(state, ca, tmp_path, "dead1")
        assert cli(state, ca, "status").returncode == 0

        # the whole stand-in SIGKILLed; then its pids are reused by a program that is not ours
        crash(broker, state)
        crash(seen[-1], state)
        sleeper = subprocess.Popen(["sleep", "60"])
        for name in ("mosquitto.pid", "provisioning.pid"):
            (state / name).write_text(f"{sleeper.pid}\n")
        assert cli(state, ca, "status").returncode == 1
        assert Cloud.load(state, ca).status()["broker"] == "dead"
        assert cli_up(state, ca) == port
        assert sleeper.poll() is None, "cloud up signalled a process that is not ours"
        seen += [pid_of(state, "mosquitto.pid"), pid_of(state, "provisioning.pid")]
        served(state, ca, tmp_path, "dead2")
    finally:
        cleanup(state, ca, seen)
        if sleeper:
            sleeper.kill()
            sleeper.wait()


def test_recorded_port_taken_by_another_program_is_explained(ca, tmp_path):
    state = tmp_path / "cloud"
    c = Cloud(state, ca, services=False).up()
    port = c.port
    c.down()
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", port))
        busy.listen()
        again = Cloud(state, ca, services=False)
        assert again.port == port  # recorded, not a fresh pick
        with pytest.raises(CloudError, match=f"(?s)in use.*port {port} is recorded in .*"
                           "cloud.json: the boards provisioned for this cloud dial it"):
            again.up()
    assert Cloud(state, ca, port=port + 1, services=False).port == port + 1  # asked for


# --- 13. CreateCertificateFromCsr quota, certificates left pending ---------------------------


def crl_serials(cloud):
    crl = x509.load_pem_x509_crl(cloud.crl_path.read_bytes())
    return {r.serial_number for r in crl}


def test_csr_flood_from_one_thing_is_throttled(cloud, ca, tmp_path):
    # The default quota (1 request/s per thing, a burst of 5): 12 requests at once.
    dev = Device(cloud, "flood1", *identity(ca, tmp_path, "flood1")[1:])
    try:
        before = crl_serials(cloud)
        dev.subscribe(CSR_TOPIC + "/accepted", CSR_TOPIC + "/rejected")
        for _ in range(12):
            dev.client.publish(CSR_TOPIC, json.dumps(
                {"certificateSigningRequest": make_csr("flood1")[0]}).encode(), qos=1)
        replies = [dev.wait(lambda m: m.topic.startswith(CSR_TOPIC + "/"), 10) for _ in range(12)]
        outcomes = [m.topic.rsplit("/", 1)[1] for m in replies]
        rejected = [json.loads(m.payload) for m in replies if m.topic.endswith("/rejected")]
        assert 5 <= outcomes.count("accepted") <= 7, outcomes
        for r in rejected:
            assert set(r) == {"statusCode", "errorCode", "errorMessage"}, r
            assert (r["statusCode"], r["errorCode"]) == (429, "ThrottlingException"), r
            assert "Rate exceeded" in r["errorMessage"] and "retry in" in r["errorMessage"]
        # a throttled request makes no certificate: the CRL grows by the accepted ones only
        assert len(crl_serials(cloud) - before) == outcomes.count("accepted")
        assert len(Registry(cloud.registry_path).list("flood1")) == outcomes.count("accepted")
        # another thing has its own quota
        other = Device(cloud, "flood2", *identity(ca, tmp_path, "flood2")[1:])
        try:
            assert other.json_request(CSR_TOPIC, {"certificateSigningRequest":
                                                  make_csr("flood2")[0]})[0] == "accepted"
        finally:
            other.close()
    finally:
        dev.close()


def _csr_reply(prov, thing):
    out, _ = prov.handle(f"{provisioning.FROM}{thing}/{CSR_TOPIC}",
                         json.dumps({"certificateSigningRequest": make_csr(thing)[0]}).encode())
    [(topic, data)] = out
    return topic.rsplit("/", 1)[1], json.loads(data)


def test_csr_quota_is_a_token_bucket_per_thing(ca, tmp_path):
    clock = [1000.0]
    reg = Registry(tmp_path / "r.sqlite3")
    prov = provisioning.Provisioner(ca, reg, csr_rate=2, csr_burst=3, clock=lambda: clock[0])
    assert [_csr_reply(prov, "q1")[0] for _ in range(3)] == ["accepted"] * 3  # the burst
    outcome, r = _csr_reply(prov, "q1")
    assert (outcome, r["statusCode"], r["errorCode"]) == ("rejected", 429, "ThrottlingException")
    assert "2 request(s) per second per thing (burst 3); retry in 0.5 s" in r["errorMessage"]
    assert _csr_reply(prov, "q2")[0] == "accepted"  # per thing
    clock[0] += 0.5  # one token back at 2/s
    assert [_csr_reply(prov, "q1")[0] for _ in range(2)] == ["accepted", "rejected"]
    clock[0] += 60  # a full bucket, not more
    assert [_csr_reply(prov, "q1")[0] for _ in range(4)] == ["accepted"] * 3 + ["rejected"]
    assert len(reg.list("q1")) == 7
    for rate, burst in ((0, 5), (-1, 5), (1, 0), (1, 1.5), ("1", 5)):
        with pytest.raises(limits.SettingError, match="quota .* is not valid"):
            Cloud(tmp_path / "c", ca, csr_rate=rate, csr_burst=burst)
    with pytest.raises(limits.SettingError, match="'0s' is not valid"):
        Cloud(tmp_path / "c", ca, pending_ttl="0s")


def test_pending_certificate_past_its_token_is_deleted_by_the_service(cloud, registry, ca,
                                                                     tmp_path):
    dev = Device(cloud, "pend1", *identity(ca, tmp_path, "pend1")[1:])
    try:
        outcome, reply = dev.json_request(CSR_TOPIC, {"certificateSigningRequest":
                                                      make_csr("pend1")[0]})
        assert outcome == "accepted"
        cid = reply["certificateId"]
        serial = x509.load_pem_x509_certificate(reply["certificatePem"].encode()).serial_number
        assert registry.get(cid)["status"] == "PENDING_ACTIVATION" and serial in crl_serials(cloud)
        # as if an hour had passed: the token expired (AWS then deletes the certificate)
        token = registry.issue_token(cid, now=time.time() - 3601)
        wait_until(lambda: registry.get(cid) is None, 10, "the expired pending certificate deleted")
        # Deleted must not mean usable: AWS accepts registered certificates only, and this
        # stand-in refuses by CRL, so the serial stays listed.
        assert serial in crl_serials(cloud)
        assert serial in [r[0] for r in registry.revocations()]
        outcome, r = dev.json_request(PROVISION_TOPIC, {"certificateOwnershipToken": token})
        assert (outcome, r["errorCode"]) == ("rejected", "InvalidCertificateOwnershipToken")
        assert "certificate " + cid[:12] + " of pend1 never provisioned" in \
            (cloud.state_dir / "provisioning.log").read_text()
    finally:
        dev.close()


def test_pending_life_is_configurable(ca, tmp_path):
    reg = Registry(tmp_path / "r.sqlite3")
    prov = provisioning.Provisioner(ca, reg, token_ttl=datetime.timedelta(seconds=2))
    outcome, reply = _csr_reply(prov, "ttl1")
    registered = reg.register(identity(ca, tmp_path, "ttl1")[0])  # ACTIVE: never expires
    now = time.time()
    assert outcome == "accepted" and not prov.expire(now=now)
    assert prov.expire(now=now + 3)  # the token lived 2 s
    assert reg.get(reply["certificateId"]) is None and reg.get(registered["cert_id"])
    assert reg.expire_pending(now=now + 10**6) == []
    c = Cloud(tmp_path / "c", ca, pending_ttl="2s", csr_rate=0.5, csr_burst=2)
    assert (c.pending_ttl, c.csr_rate, c.csr_burst) == ("2s", 0.5, 2)


# --- 3. a certificate the device abandoned is set INACTIVE -----------------------------------


def _new_active(dev, thing, tmp_path):
    """A certificate the thing got through CreateCertificateFromCsr + RegisterThing (ACTIVE),
    as (id, certfile, keyfile): what a rotation's trial connection would use."""
    from upcert.pki.certs import write_private_key

    pem, key = make_csr(thing)
    outcome, reply = dev.json_request(CSR_TOPIC, {"certificateSigningRequest": pem})
    assert outcome == "accepted", reply
    outcome, r = dev.json_request(PROVISION_TOPIC, {
        "certificateOwnershipToken": reply["certificateOwnershipToken"], "parameters": {}})
    assert outcome == "accepted", r
    certfile, keyfile = tmp_path / f"{thing}-new.pem", tmp_path / f"{thing}-new.key"
    certfile.write_text(reply["certificatePem"])
    write_private_key(keyfile, key)
    return reply["certificateId"], certfile, keyfile


def test_job_failed_with_an_abandoned_certificate_deactivates_it(cloud, registry, ca, tmp_path):
    thing = "aband-job"
    cert, certfile0, keyfile0 = identity(ca, tmp_path, thing)
    old = registry.register(cert)
    other = registry.register(identity(ca, tmp_path, "aband-other")[0])
    dev = Device(cloud, thing, certfile0, keyfile0)
    base = jobs.prefix(thing)
    try:
        new_id, certfile, keyfile = _new_active(dev, thing, tmp_path)
        handshake(cloud, certfile, keyfile)  # usable
        # another thing's certificate in the report: ignored
        job = admin.create_rotation_job(cloud.state_dir, thing)
        dev.json_request(base + "start-next", {})
        outcome, _ = dev.json_request(f"{base}{job}/update", {"status": "FAILED", "statusDetails": {
            "step": "trial", "abandonedCertificateId": other["cert_id"]}})
        assert outcome == "accepted" and registry.get(other["cert_id"])["status"] == "ACTIVE"
        # its own: INACTIVE before the accepted reply leaves, the broker refuses it at once
        job = admin.create_rotation_job(cloud.state_dir, thing)
        dev.json_request(base + "start-next", {})
        outcome, _ = dev.json_request(f"{base}{job}/update", {"status": "FAILED", "statusDetails": {
            "step": "trial", "reason": "refused", "abandonedCertificateId": new_id}})
        assert outcome == "accepted"
        assert registry.get(new_id)["status"] == "INACTIVE"
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REVOKED"):
            handshake(cloud, certfile, keyfile)
        assert registry.get(old["cert_id"])["status"] == "ACTIVE"
        assert not dev.dropped.is_set()  # the device's own connection is not touched
    finally:
        dev.close()
    log = (cloud.state_dir / "provisioning.log").read_text()
    assert f"names certificate {other['cert_id'][:16]}, which is another thing's: ignored" in log


def test_rotation_abandoned_event_deactivates_the_things_own_certificate(cloud, registry, ca,
                                                                        tmp_path):
    thing = "aband-evt"
    victim = registry.register(identity(ca, tmp_path, "aband-victim")[0])
    dev = Device(cloud, thing, *identity(ca, tmp_path, thing)[1:])
    try:
        new_id, certfile, keyfile = _new_active(dev, thing, tmp_path)
        pending = dev.json_request(CSR_TOPIC, {"certificateSigningRequest":
                                               make_csr(thing)[0]})[1]["certificateId"]
        handshake(cloud, certfile, keyfile)

        def event(topic_thing, cert_id):
            dev.client.publish(f"things/{topic_thing}/rotation", json.dumps({
                "event": "rotation-abandoned", "certificateId": cert_id, "step": "trial"}),
                qos=1).wait_for_publish(5)

        event(thing, victim["cert_id"])  # another thing's certificate: ignored
        event("aband-victim", victim["cert_id"])  # another thing's topic: the ACL drops it
        event(thing, pending)  # PENDING_ACTIVATION: INACTIVE too (never expires into use)
        event(thing, new_id)
        # in order, through one connection and one service: once this is refused, all were seen
        wait_until(lambda: _refused(cloud, certfile, keyfile), 10,
                   "the abandoned certificate refused")
        assert registry.get(new_id)["status"] == "INACTIVE"
        assert registry.get(pending)["status"] == "INACTIVE"
        assert registry.get(victim["cert_id"])["status"] == "ACTIVE"
        assert not dev.dropped.is_set()
    finally:
        dev.close()
    log = (cloud.state_dir / "provisioning.log").read_text()
    assert f"names certificate {victim['cert_id'][:16]}, which is another thing's: ignored" in log


def test_rotation_done_event_retires_the_old_certificate(cloud, registry, ca, tmp_path):
    # A rotation without a job (expiry, a command) reports {"event": "rotation-done"} once its
    # new identity is proven: the old certificate goes INACTIVE, as for a job SUCCEEDED; only
    # when both are the thing's and ACTIVE.
    thing = "done-evt"
    cert, certfile0, keyfile0 = identity(ca, tmp_path, thing)
    old = registry.register(cert)
    victim = registry.register(identity(ca, tmp_path, "done-victim")[0])
    dev = Device(cloud, thing, certfile0, keyfile0)
    try:
        new_id, certfile, keyfile = _new_active(dev, thing, tmp_path)

        def done(old_id, new):
            dev.client.publish(f"things/{thing}/rotation", json.dumps({
                "event": "rotation-done", "oldCertificateId": old_id,
                "newCertificateId": new}), qos=1).wait_for_publish(5)

        done(victim["cert_id"], new_id)  # another thing's certificate: ignored
        done(old["cert_id"], new_id)
        wait_until(lambda: registry.get(old["cert_id"])["status"] == "INACTIVE", 10,
                   "the old certificate retired")
        assert registry.get(new_id)["status"] == "ACTIVE"
        assert registry.get(victim["cert_id"])["status"] == "ACTIVE"
        handshake(cloud, certfile, keyfile)  # the new identity still works
    finally:
        dev.close()


def _refused(cloud, certfile, keyfile):
    try:
        handshake(cloud, certfile, keyfile)
    except ssl.SSLError as e:
        assert "CERTIFICATE_REVOKED" in str(e), e
        return True
    return False
