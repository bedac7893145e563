"""The device stack (tlsconn, mqtt, agent, app) on the MicroPython unix port against a real
mosquitto with TLS 1.2, client certificates and the AWS suites, watched by paho-mqtt; plus the
refusals (foreign server CA, wrong hostname, foreign device CA) and their diagnoses."""

import datetime as dt
import getpass
import json
import os
import queue
import socket
import ssl
import subprocess
import time

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.tools import ROOT, micropython_cmd, require

# AWS IoT TLS 1.2 suites (Developer Guide, "Transport security in AWS IoT Core") in OpenSSL names, as the stand-in broker offers them.
AWS_OPENSSL_SUITES = (
    ":".join(
        f"{kx}{c}"
        for c in (
            "AES128-GCM-SHA256",
            "AES128-SHA256",
            "AES128-SHA",
            "AES256-GCM-SHA384",
            "AES256-SHA384",
            "AES256-SHA",
        )
        for kx in ("ECDHE-ECDSA-", "ECDHE-RSA-")
    )
    + ":AES128-GCM-SHA256:AES128-SHA256:AES128-SHA:AES256-GCM-SHA384:AES256-SHA256:AES256-SHA"
)
DEPS = ROOT / ".build" / "deps"
# GC heap (-X heapsize) of the device runs; mbedTLS allocates outside it on the unix port.
# The link layer (tlsconn + diagnose + mqtt, loaded as .mpy) does connect, subscribe,
# QoS 1 publish and a command round trip in 48K. The whole app also loads config/store/der/
# x509/clock/agent: ~60 KB of RAM for module code alone when .mpy files are loaded into RAM on
# this 64-bit port (measured minimum 78K); frozen modules keep that code in flash.
HEAP_LINK = os.environ.get("UPCERT_HEAP_LINK", "48K")
HEAP_APP = os.environ.get("UPCERT_HEAP_APP", "128K")  # rotation state joined the agent
NOW = dt.datetime.now(dt.timezone.utc)

DEVICE_SCRIPT = r"""
import sys
from upcert import tlsconn, mqtt
from upcert.errors import ConnectError
d, mode, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rd(name):
    with open(d + "/" + name, "rb") as f:
        return f.read()
roots = [rd(n) for n in sys.argv[4].split(",")]
ctx = tlsconn.make_context(rd("cert.der"), rd("key.der"), roots)
try:
    sock = tlsconn.Connector(ctx, timeout_s=10).connect(sys.argv[5], port)
except ConnectError as e:
    print("REFUSED", e)
    sys.exit(0)
print("CIPHER", sock.cipher())
if mode == "mqtt":
    import time
    got = []
    c = mqtt.Client("dev1", keepalive_s=60)
    c.set_callback(lambda topic, msg: got.append(msg))
    c.connect(sock)
    c.subscribe("things/dev1/commands")
    c.publish("things/dev1/telemetry", b"hello from micropython", qos=1)
    print("PUBACK")
    t0 = time.ticks_ms()
    while not got and time.ticks_diff(time.ticks_ms(), t0) < 20000:  # bounded poll
        c.service()
        time.sleep_ms(20)
    if not got:
        raise AssertionError("no command on things/dev1/commands within 20 s")
    c.publish("things/dev1/replies", b"echo " + got[0], qos=1)
    print("ANSWERED")
    c.disconnect()
else:
    sock.close()
"""

APP_SCRIPT = r"""
import sys
import board
from upcert import app
def log(line):
    print(line)
    if line.startswith("upcert: published telemetry seq=3"):
        raise KeyboardInterrupt
try:
    app.main(board, sys.argv[1] + "/config.json", log)
except KeyboardInterrupt:
    print("STOPPED")
"""

BOARD = r"""
NAME = "unix-test"
def network_up(config, timeout_ms=20000):
    pass
def clock():
    from upcert.clock import Clock
    return Clock()
def store(config):
    from upcert.store_fs import FsStore
    return FsStore(config["store"]["root"])
"""


def _write(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _issue(cn, key, issuer=None, ca=False, dns=None, days=(-1, 30)):
    """(certificate, key): self-signed when issuer is None, else signed by issuer=(cert, key)."""
    icert, ikey = issuer or (None, key)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(icert.subject if icert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return b.sign(ikey, hashes.SHA256()), key


def _ec():
    return ec.generate_private_key(ec.SECP256R1())


class Pki:
    """Throwaway CAs and certificates in `folder`: PEM for mosquitto/paho, DER for the device.
    Private keys are written mode 0600 and never printed."""

    def __init__(self, folder):
        self.dir = folder
        self.ca = _issue("upcert test CA", _ec(), ca=True, days=(-1, 3650))
        self.other_ca = _issue(
            "other CA", rsa.generate_private_key(65537, 2048), ca=True, days=(-1, 3650)
        )
        self.save("ca", *self.ca)
        self.save("other-ca", *self.other_ca)
        self.save("srv", *_issue("localhost", _ec(), self.ca, dns="localhost"))
        self.save("srv-other-ca", *_issue("localhost", _ec(), self.other_ca, dns="localhost"))
        self.save("srv-wrong-host", *_issue("wrong.example", _ec(), self.ca, dns="wrong.example"))
        self.save("watcher", *_issue("watcher", _ec(), self.ca))

    def save(self, name, cert, key):
        _write(self.dir / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
        _write(self.dir / f"{name}.der", cert.public_bytes(serialization.Encoding.DER))
        pkcs8 = serialization.PrivateFormat.PKCS8
        none = serialization.NoEncryption()
        _write(
            self.dir / f"{name}.key",
            key.private_bytes(serialization.Encoding.PEM, pkcs8, none),
            0o600,
        )

    def device(self, folder, cn="dev1", issuer=None):
        """Device credentials as the fs store keeps them: folder/cert.der, folder/key.der."""
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = _issue(cn, _ec(), issuer or self.ca)
        _write(folder / "cert.der", cert.public_bytes(serialization.Encoding.DER))
        _write(
            folder / "key.der",
            key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            0o600,
        )
        for name in ("ca", "other-ca"):
            (folder / f"{name}.der").write_bytes((self.dir / f"{name}.der").read_bytes())
        return folder


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1: TLS 1.2 only, AWS suites, client certificates from pki.ca."""

    def __init__(self, pki, server, folder):
        self.port = _free_port()
        self.log = folder / f"mosquitto-{server}.log"
        conf = folder / f"mosquitto-{server}.conf"
        conf.write_text(
            f"user {getpass.getuser()}\n"  # as root it would drop to user mosquitto otherwise
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {pki.dir / 'ca.pem'}\ncertfile {pki.dir / (server + '.pem')}\n"
            f"keyfile {pki.dir / (server + '.key')}\n"
            "require_certificate true\nuse_identity_as_username true\n"
            f"tls_version tlsv1.2\nciphers {AWS_OPENSSL_SUITES}\n"
            "persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        )
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [require("mosquitto"), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"mosquitto did not start: {self.log.read_text()}")
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Watcher:
    """paho-mqtt client over TLS with its own certificate, collecting messages under things/#."""

    def __init__(self, pki, broker):
        self.messages = queue.Queue()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="watcher")
        ctx = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))
        ctx.load_cert_chain(str(pki.dir / "watcher.pem"), str(pki.dir / "watcher.key"))
        c.tls_set_context(ctx)
        subscribed = queue.Queue()
        c.on_message = lambda cl, ud, m: self.messages.put((m.topic, m.payload))
        c.on_subscribe = lambda *a: subscribed.put(True)
        c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe("things/#", qos=1)
        c.connect("localhost", broker.port)
        c.loop_start()
        subscribed.get(timeout=10)
        self.client = c

    def wait_for(self, topic, timeout_s=30):
        deadline = time.monotonic() + timeout_s
        while True:
            t, payload = self.messages.get(timeout=max(0.1, deadline - time.monotonic()))
            if t == topic:
                return payload

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """The device package compiled to .mpy, as a board runs it (compiling .py on the device
    would not fit the small heap)."""
    require("micropython")
    out = tmp_path_factory.mktemp("lib")
    for src in (ROOT / "firmware" / "upcert").glob("*.py"):
        (out / src.parent.name).mkdir(exist_ok=True)
        dst = out / src.parent.name / (src.stem + ".mpy")
        subprocess.run([require("mpy-cross"), "-o", str(dst), str(src)], check=True)
    return out


@pytest.fixture(scope="module")
def pki(lib, tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("pki"))
    p.lib = lib
    return p


@pytest.fixture(scope="module")
def brokers(pki, tmp_path_factory):
    folder = tmp_path_factory.mktemp("brokers")
    started = {
        name: Broker(pki, name, folder) for name in ("srv", "srv-other-ca", "srv-wrong-host")
    }
    yield started
    for b in started.values():
        b.stop()


def _env(pki, folder):
    return dict(os.environ, MICROPYPATH=os.pathsep.join([str(pki.lib), str(folder)]))


def _start(pki, folder, mode, port, roots="ca.der", host="localhost"):
    (folder / "run.py").write_text(DEVICE_SCRIPT)
    return subprocess.Popen(
        micropython_cmd(HEAP_LINK)
        + [str(folder / "run.py"), str(folder), mode, str(port), roots, host],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(pki, folder),
        cwd=folder,
    )


def _device(pki, folder, mode, port, roots="ca.der", host="localhost"):
    proc = _start(pki, folder, mode, port, roots, host)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    return out


def test_connect_publish_qos1_and_command_round_trip(pki, brokers, tmp_path):
    watcher = Watcher(pki, brokers["srv"])
    proc = _start(pki, pki.device(tmp_path), "mqtt", brokers["srv"].port)
    try:
        try:
            assert watcher.wait_for("things/dev1/telemetry") == b"hello from micropython"
            watcher.client.publish("things/dev1/commands", b'{"cmd": "ping", "id": 1}', qos=1)
            assert watcher.wait_for("things/dev1/replies") == b'echo {"cmd": "ping", "id": 1}'
        except queue.Empty:
            proc.kill()
            pytest.fail("no message from the device; it printed:\n" + proc.communicate()[0])
        out = proc.communicate(timeout=60)[0]
    finally:
        watcher.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "CIPHER ('TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256', 'TLSv1.2')" in out, out
    assert "PUBACK" in out and "ANSWERED" in out, out


def test_two_roots_both_trusted(pki, brokers, tmp_path):
    dev = pki.device(tmp_path)
    for server in ("srv", "srv-other-ca"):
        out = _device(pki, dev, "tls", brokers[server].port, roots="other-ca.der,ca.der")
        assert "CIPHER ('TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256', 'TLSv1.2')" in out, out


def test_server_certificate_from_another_ca(pki, brokers, tmp_path):
    out = _device(pki, pki.device(tmp_path), "tls", brokers["srv-other-ca"].port)
    assert "REFUSED server certificate not trusted: signed by a CA that is not in roots.der" in out


def test_server_hostname_mismatch(pki, brokers, tmp_path):
    out = _device(pki, pki.device(tmp_path), "tls", brokers["srv-wrong-host"].port)
    assert "REFUSED server certificate not trusted: not issued for SNI 'localhost'" in out, out


def test_device_certificate_from_another_ca(pki, brokers, tmp_path):
    dev = pki.device(tmp_path, issuer=pki.other_ca)
    out = _device(pki, dev, "tls", brokers["srv"].port)
    assert "closed the connection in the TLS handshake: broker rejected our certificate" in out, out


def test_connection_refused(pki, tmp_path):
    out = _device(pki, pki.device(tmp_path), "tls", _free_port())
    assert "REFUSED connection refused by localhost:" in out, out


def test_app_agent_round_trip_with_ping(pki, brokers, tmp_path):
    """app.main with the real config/store/x509/clock modules: telemetry, a ping answered, in
    a HEAP_APP heap."""
    broker = brokers["srv"]
    dev = pki.device(tmp_path)
    (dev / "roots.der").write_bytes((pki.dir / "ca.der").read_bytes())
    (dev / "board.py").write_text(BOARD)
    (dev / "config.json").write_text(
        json.dumps(
            {
                "thing": "dev1",
                "endpoint": "localhost",
                "port": broker.port,
                "store": {"kind": "fs", "root": str(dev)},
                "telemetry_interval_s": 1,
                # 30-day certificate: keep the renewal rules off (no provisioning service here)
                "renew": {"days": 0, "fraction": 0, "jitter_s": 0},
            }
        )
    )
    watcher = Watcher(pki, broker)
    try:
        (dev / "app.py").write_text(APP_SCRIPT)
        proc = subprocess.Popen(
            micropython_cmd(HEAP_APP) + [str(dev / "app.py"), str(dev)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_env(pki, dev),
            cwd=dev,
            text=True,
        )
        try:
            telemetry = json.loads(watcher.wait_for("things/dev1/telemetry"))
            watcher.client.publish(
                "things/dev1/commands", json.dumps({"cmd": "ping", "id": 41}), qos=1
            )
            reply = json.loads(watcher.wait_for("things/dev1/replies"))
        except queue.Empty:
            proc.kill()
            pytest.fail("no message from the device; it printed:\n" + proc.communicate()[0])
        out, _ = proc.communicate(timeout=60)
    finally:
        watcher.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert telemetry["thing"] == "dev1" and telemetry["clock"] == "trusted", telemetry
    assert telemetry["days_left"] == 29 and telemetry["seq"] == 1, telemetry
    assert reply["id"] == 41 and reply["ok"] is True and reply["cmd"] == "ping", reply
    lines = out.splitlines()
    assert lines[0] == f"upcert: connecting localhost:{broker.port} as dev1", out
    assert lines[1].startswith(
        "upcert: connected TLS 1.2 TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256 (builtin) "
        f"cert {telemetry['cert_id'][:16]} expires "
    ), out
    assert "upcert: command ping id=41 answered" in out, out
    assert "upcert: published telemetry seq=3" in out and "STOPPED" in out, out
    assert "PRIVATE" not in out and (dev / "key.der").read_bytes().hex()[:32] not in out
