"""upcert's own TLS 1.2 client (firmware/upcert/tls12.py, run by the MicroPython unix port)
against peers nobody here wrote, client certificate required, TLS 1.2 only: CPython's ssl
(OpenSSL) with each of the four suites, `openssl s_server` with ALPN, and the refusals, each a
failed connection with the right alert and a closed socket, never a hang."""

import json
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from upcert.pki.ca import LocalCa
from upcert.pki.certs import generate_key

from tests.tools import ROOT, micropython_cmd, require, wait_until

SUITES = {  # OpenSSL name -> what the device reports
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
    "ECDHE-ECDSA-AES128-SHA256": "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256",
    "ECDHE-RSA-AES128-SHA256": "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256",
}
DEVICE = r"""
import json, socket, sys, time
import gc
from upcert import tls12
a = json.load(open(sys.argv[1]))
roots = [bytes.fromhex(r) for r in a["roots"]]
# the key's scalar, read from its DER once, as the agent's connector does (tls12.key_scalar):
# a p256.Key only during the handshake
key = tls12.key_scalar(bytes.fromhex(a["key"]))
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", a["port"])[0][-1])
out = {}
del json
sys.modules.pop("json", None)
gc.collect()
base = gc.mem_alloc()
t0 = time.ticks_ms()
try:
    c = tls12.TlsClient(s, a["host"], roots, a.get("now", time.time()),
                        (bytes.fromhex(a["cert"]), key),
                        alpn=[p.encode() for p in a["alpn"]] if a.get("alpn") else None,
                        timeout_s=a.get("timeout", 10))
    out["ms"] = time.ticks_diff(time.ticks_ms(), t0)
    gc.collect()
    out["held"] = gc.mem_alloc() - base  # what the open connection keeps
    out["cipher"] = c.cipher()[0]
    out["alpn"] = c.alpn.decode() if c.alpn else None
    c.write(a.get("send", "ping").encode())
    got = b""
    while len(got) < a.get("expect", 4):
        d = c.read(100)
        if not d:
            break
        got += d
    out["got"] = got.decode()
    c.close()
except tls12.TlsError as e:
    out["error"] = str(e)
    out["alert"] = e.alert
    out["received"] = e.received
    out["reason"] = e.reason
import json
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    require("micropython")
    out = {}
    for kind in ("ec", "rsa"):
        ca = LocalCa.init(tmp_path_factory.mktemp(f"ca-{kind}"), key_type=kind)
        key = generate_key("ec")
        cert = ca.issue_device("tls-dev", key.public_key())
        out[kind] = {
            "ca": ca,
            "roots": [ca.certificate.public_bytes(serialization.Encoding.DER).hex()],
            "cert": cert.public_bytes(serialization.Encoding.DER).hex(),
            "key": key.private_bytes(serialization.Encoding.DER,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).hex(),
        }
    return out


def device(tmp_path, pki_kind, port, host="localhost", **extra):
    args = {"port": port, "host": host, "roots": pki_kind["roots"], "cert": pki_kind["cert"],
            "key": pki_kind["key"], **extra}
    (tmp_path / "args.json").write_text(json.dumps(args))
    (tmp_path / "dev.py").write_text(DEVICE)
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
    proc = subprocess.run(micropython_cmd("2M") + [str(tmp_path / "dev.py"),
                                                   str(tmp_path / "args.json")],
                          capture_output=True, text=True, timeout=120, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout + proc.stderr
    return json.loads(lines[-1][7:])


class PyServer:
    """One-connection TLS 1.2 server on CPython's ssl (OpenSSL): requires a client certificate
    from the CA, answers "pong" to what it reads; .error is what OpenSSL said, if it failed."""

    def __init__(self, ca, cipher=None, alpn=None, cert=None, key=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert or ca.server_pem, key or ca.server_key)
        ctx.load_verify_locations(ca.ca_pem)
        ctx.verify_mode = ssl.CERT_REQUIRED
        if cipher:
            ctx.set_ciphers(cipher)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.error = self.cipher = self.peer = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(60)
        try:
            raw, _ = self.sock.accept()
            with self.ctx.wrap_socket(raw, server_side=True) as tls:
                tls.settimeout(20)
                self.cipher = tls.cipher()[0]
                self.peer = tls.getpeercert()
                data = tls.recv(100)
                tls.sendall(b"pong" if data == b"ping" else b"??")
                try:
                    tls.recv(10)  # the client's close_notify
                except (ssl.SSLError, OSError):
                    pass
        except (ssl.SSLError, OSError) as e:
            self.error = str(e)
        finally:
            self.sock.close()

    def join(self):
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.mark.parametrize("suite", list(SUITES))
def test_each_aws_suite_against_openssl(pki, tmp_path, suite):
    kind = "ec" if "ECDSA" in suite else "rsa"
    srv = PyServer(pki[kind]["ca"], cipher=suite)
    out = device(tmp_path, pki[kind], srv.port)
    srv.join()
    assert "error" not in out, out
    assert out["cipher"] == SUITES[suite] and srv.cipher == suite
    assert out["got"] == "pong"
    assert srv.peer and dict(x[0] for x in srv.peer["subject"])["commonName"] == "tls-dev"


def test_alpn_is_offered_and_agreed(pki, tmp_path):
    srv = PyServer(pki["ec"]["ca"], alpn=["x-amzn-mqtt-ca"])
    out = device(tmp_path, pki["ec"], srv.port, alpn=["x-amzn-mqtt-ca"])
    srv.join()
    assert out.get("alpn") == "x-amzn-mqtt-ca", out


def test_hostname_mismatch_is_refused(pki, tmp_path):
    srv = PyServer(pki["ec"]["ca"])
    out = device(tmp_path, pki["ec"], srv.port, host="other.example")
    srv.join()
    assert out.get("alert") == 42 and not out["received"], out  # bad_certificate
    assert "other.example" in out["error"]
    assert srv.error  # the server saw the alert or the close


def test_unknown_ca_is_refused(pki, tmp_path):
    srv = PyServer(pki["rsa"]["ca"])  # the device trusts only the EC CA
    out = device(tmp_path, dict(pki["ec"], cert=pki["rsa"]["cert"], key=pki["rsa"]["key"]),
                 srv.port)
    srv.join()
    assert out.get("alert") == 48, out  # unknown_ca


@pytest.mark.parametrize("offset_days, alert", [(-900, 45), (900, 45)])
def test_server_certificate_outside_its_validity_is_refused(pki, tmp_path, offset_days, alert):
    srv = PyServer(pki["ec"]["ca"])
    now = time.time() + offset_days * 86400
    out = device(tmp_path, pki["ec"], srv.port, now=now)
    srv.join()
    assert out.get("alert") == alert, out


def test_a_server_that_stalls_times_out(pki, tmp_path):
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    conns = []
    t = threading.Thread(target=lambda: conns.append(sock.accept()), daemon=True)
    t.start()
    t0 = time.monotonic()
    out = device(tmp_path, pki["ec"], port, timeout=2)
    assert time.monotonic() - t0 < 30
    assert out.get("reason") == 3, out  # TIMEOUT
    sock.close()


def test_a_server_that_closes_mid_handshake(pki, tmp_path):
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    def serve():
        c, _ = sock.accept()
        c.recv(2000)
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    out = device(tmp_path, pki["ec"], port)
    assert out.get("reason") == 2 and "closed" in out["error"], out  # CLOSED
    sock.close()


def test_the_leaf_key_is_parsed_by_cryptography_too(pki):
    # the fixture's certificate is what the device sends: sanity for the test itself
    cert = x509.load_der_x509_certificate(bytes.fromhex(pki["ec"]["cert"]))
    assert cert.subject.rfc4514_string() == "CN=tls-dev"


class Tamper:
    """A TCP relay between the device and a PyServer that flips one bit in the first server
    record of type `ctype` (23: application data, 22: handshake) after `skip` such records."""

    def __init__(self, upstream_port, ctype=23, skip=0):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.up, self.ctype, self.skip = upstream_port, ctype, skip
        self.flipped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        c, _ = self.sock.accept()
        s = socket.create_connection(("127.0.0.1", self.up))
        threading.Thread(target=self._pipe, args=(c, s), daemon=True).start()
        buf = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
                while len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[3:5], "big"):
                    n = 5 + int.from_bytes(buf[3:5], "big")
                    rec, buf = bytearray(buf[:n]), buf[n:]
                    if rec[0] == self.ctype and not self.flipped:
                        if self.skip:
                            self.skip -= 1
                        else:
                            rec[-1] ^= 1  # the tag's / MAC's last byte
                            self.flipped = True
                    c.sendall(rec)
        except OSError:
            pass
        finally:
            c.close()
            s.close()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-SHA256"])
def test_a_tampered_record_is_refused_with_bad_record_mac(pki, tmp_path, suite):
    srv = PyServer(pki["ec"]["ca"], cipher=suite)
    relay = Tamper(srv.port, ctype=23)
    out = device(tmp_path, pki["ec"], relay.port)
    assert relay.flipped and out.get("alert") == 20, out  # bad_record_mac
    assert not out["received"] and "check" in out["error"], out


def test_a_tampered_finished_fails_the_handshake(pki, tmp_path):
    # the server's encrypted Finished is the first handshake record after its ChangeCipherSpec;
    # the records before it (ServerHello .. ServerHelloDone) are skipped
    srv = PyServer(pki["ec"]["ca"], cipher="ECDHE-ECDSA-AES128-GCM-SHA256")
    relay = Tamper(srv.port, ctype=22, skip=1)
    out = device(tmp_path, pki["ec"], relay.port)
    assert relay.flipped and out.get("alert") in (20, 51), out  # bad_record_mac or decrypt_error
    srv.join()
    assert srv.error  # OpenSSL saw the alert or the close: no session


def _s_server(*args):
    """(process, port) of `openssl s_server` on a free port with args, client certificate
    required, TLS 1.2 only; returns once it accepts connections."""
    openssl = require("openssl")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([openssl, "s_server", "-accept", str(port), "-Verify", "1",
                             "-tls1_2", "-no_ticket", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def accepts():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return proc.poll() is not None  # exited: the test reads why from its output

    wait_until(accepts, 10, f"openssl s_server listening on {port}")
    return proc, port


def test_a_renegotiation_request_is_refused(pki, tmp_path):
    # openssl s_server sends a HelloRequest when it reads "r" on stdin (s_server(1)); the device
    # answers no_renegotiation and closes: it never renegotiates
    ca = pki["ec"]["ca"]
    proc, port = _s_server("-cert", str(ca.server_pem), "-key", str(ca.server_key), "-CAfile",
                           str(ca.ca_pem))
    try:
        def renegotiate_after_handshake():
            for line in proc.stdout:
                if "CIPHER is" in line or "Shared ciphers" in line:
                    proc.stdin.write("r\n")
                    proc.stdin.flush()
                    return

        threading.Thread(target=renegotiate_after_handshake, daemon=True).start()
        out = device(tmp_path, pki["ec"], port, send="ping", expect=100)
    finally:
        proc.kill()
        proc.wait()
    assert out.get("alert") == 100 and "renegotiate" in out["error"], out


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_a_bad_server_key_exchange_signature_is_refused(pki, tmp_path, kind):
    # OpenSSL sends each handshake message of its first flight in a record of its own:
    # ServerHello, Certificate, then ServerKeyExchange, whose last byte is its signature's
    suite = {"ec": "ECDHE-ECDSA-AES128-GCM-SHA256", "rsa": "ECDHE-RSA-AES128-GCM-SHA256"}[kind]
    srv = PyServer(pki[kind]["ca"], cipher=suite)
    relay = Tamper(srv.port, ctype=22, skip=2)
    out = device(tmp_path, pki[kind], relay.port)
    assert relay.flipped and out.get("alert") == 51, out  # decrypt_error
    assert "ServerKeyExchange signature does not verify" in out["error"], out


def _chain(tmp_path, kind):
    """(root DER hex, leaf.pem, key.pem, chain.pem): a server chain for localhost like Amazon's,
    made with cryptography: RSA-2048 root -> RSA intermediate (CA) -> RSA leaf, sha256WithRSA;
    or P-256 root -> P-256 leaf, ecdsa-with-SHA256."""
    import datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def key():
        return rsa.generate_private_key(65537, 2048) if kind == "rsa" else \
            ec.generate_private_key(ec.SECP256R1())

    def cert(cn, pub, issuer_cn, issuer_key, ca, path_len=None):
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
             .public_key(pub).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True))
        if not ca:
            b = (b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False))
        return b.sign(issuer_key, hashes.SHA256())

    rk, lk = key(), key()
    root = cert(f"{kind} root", rk.public_key(), f"{kind} root", rk, True)
    pem = serialization.Encoding.PEM
    chain = b""
    if kind == "rsa":
        ik = key()
        inter = cert("rsa intermediate", ik.public_key(), "rsa root", rk, True, 0)
        leaf = cert("localhost", lk.public_key(), "rsa intermediate", ik, False)
        chain = inter.public_bytes(pem)
    else:
        leaf = cert("localhost", lk.public_key(), "ec root", rk, False)
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (tmp_path / "key.pem").write_bytes(lk.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "chain.pem").write_bytes(chain)
    return root.public_bytes(serialization.Encoding.DER).hex()


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_openssl_s_server_with_a_chain_and_alpn(pki, tmp_path, kind):
    # RSA: root -> intermediate -> leaf, the intermediate sent by the server (-cert_chain);
    # ECC: root -> leaf. Client certificate required (-Verify), TLS 1.2 only, ALPN.
    root_hex = _chain(tmp_path, kind)
    args = ["-cert", str(tmp_path / "leaf.pem"), "-key", str(tmp_path / "key.pem"), "-CAfile",
            str(pki["ec"]["ca"].ca_pem), "-alpn", "x-amzn-mqtt-ca", "-rev"]
    if kind == "rsa":
        args += ["-cert_chain", str(tmp_path / "chain.pem")]
    proc, port = _s_server(*args)
    try:
        out = device(tmp_path, dict(pki["ec"], roots=[root_hex]), port, send="ping\n",
                     alpn=["x-amzn-mqtt-ca"], expect=4)
    finally:
        proc.kill()
        log = proc.communicate()[0]
    assert "error" not in out, (out, log[-1500:])
    assert out["alpn"] == "x-amzn-mqtt-ca" and out["got"].startswith("gnip"), out
    want = "TLS-ECDHE-RSA-" if kind == "rsa" else "TLS-ECDHE-ECDSA-"
    assert out["cipher"].startswith(want), out
