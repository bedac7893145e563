"""upcert.p256 and upcert.csr (run by the MicroPython unix port) checked by independent
implementations: pyca/cryptography (keys, ECDSA, RFC 6979, PKCS#8, CSRs), `openssl req -verify`,
and mbedTLS itself (a TLS 1.2 handshake with client authentication using the device's key)."""

import contextlib
import hashlib
import json
import os
import socket
import ssl
import subprocess
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from upcert.board.firmware import compile_mpy
from upcert.pki.ca import LocalCa

from tests.tools import ROOT, micropython_cmd, require

COUNT = 20
ATTR_OIDS = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "serialNumber": NameOID.SERIAL_NUMBER,
}
PRINTABLE = ("C", "serialNumber")
SAN = x509.SubjectAlternativeName([x509.DNSName("dev.example")])


def micropython(folder, script, *args, heapsize=None, path=None):
    """Run `script` (saved in folder) on the unix port with the device package importable;
    return its stdout."""
    (folder / "script.py").write_text(script)
    env = dict(os.environ, MICROPYPATH=path or str(ROOT / "firmware"))
    cmd = micropython_cmd(heapsize) + [str(folder / "script.py"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def der_key(key, fmt=serialization.PrivateFormat.PKCS8):
    return key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())


def _point(public_key):
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def compile_package(lib, names):
    """Compile the named firmware/upcert modules to lib/upcert.d/*.mpy, as the board ships them."""
    out = lib / "upcert"
    out.mkdir(parents=True)
    for name in ("__init__",) + tuple(names):
        (out / f"{name}.mpy").write_bytes(compile_mpy(ROOT / "firmware" / "upcert" / f"{name}.py"))
    return lib


def server_context(ca):
    """TLS 1.2 server context (as AWS IoT) for 'localhost' that requires a client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(ca.server_pem, ca.server_key)
    ctx.load_verify_locations(cafile=ca.ca_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@contextlib.contextmanager
def tls_server(ctx):
    """A one-connection TLS server on 127.0.0.1: yields (port, seen); seen gets the client's
    certificate DER (answering 'pong'), or the handshake error."""
    seen = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(60)

    def serve():
        try:
            conn, _ = listener.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                seen.append(tls.getpeercert(binary_form=True))
                tls.recv(16)
                tls.sendall(b"pong")
        except (OSError, ssl.SSLError) as exc:
            seen.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        thread.join(60)
        listener.close()


# Runs under MicroPython: argv[1] a JSON job list, argv[2] a folder with pre-made (0600) key files.
BULK = r"""
import sys, json, hashlib
from binascii import hexlify
from upcert import p256, csr
jobs = json.load(open(sys.argv[1]))
for i, job in enumerate(jobs):
    key = p256.generate()
    digest = hashlib.sha256(job["msg"].encode()).digest()
    r, s = key.sign_digest(digest)
    exts = [(e[0], e[1], bytes.fromhex(e[2])) for e in job["exts"]] or None
    req = csr.build(key, [tuple(p) for p in job["subject"]], extensions=exts)
    with open("%s/key%d.der" % (sys.argv[2], i), "wb") as f:
        f.write(key.private_der())
    print(json.dumps({"point": hexlify(key.public_point()).decode(), "r": "%x" % r,
                      "s": "%x" % s, "sig": hexlify(p256.signature_der(r, s)).decode(),
                      "csr": hexlify(req).decode(), "pem": csr.pem(req)}))
"""

# Runs under MicroPython: load each key file named in argv[1:], print its public point or error.
LOAD = r"""
import sys
from binascii import hexlify
from upcert import p256
from upcert.errors import CertificateError
for path in sys.argv[1:]:
    try:
        print(hexlify(p256.Key.from_der(open(path, "rb").read()).public_point()).decode())
    except (CertificateError, ValueError) as exc:
        print("error:", exc)
"""


def _jobs():
    subjects = [[["CN", f"dev{i}"]] for i in range(4)] + [
        [["CN", "x" * 64], ["O", "o" * 64], ["OU", "u" * 64], ["ST", "s" * 128], ["L", "l" * 128]],
        [["C", "DE"], ["ST", "Bayern"], ["L", "München"], ["O", "Ämter & Söhne"], ["CN", "ü-1"]],
        [["serialNumber", "AB-12 (x)+,./:=?'"], ["CN", "sn"]],
        [["O", "Acme"], ["CN", "thing-1"], ["OU", "fleet"], ["OU", "eu"]],
        [["CN", "日本語デバイス"], ["C", "JP"]],
        [],
    ]
    jobs = []
    for i in range(COUNT):
        exts = []
        if i % 5 == 4:
            exts = [
                ["2.5.29.17", False, SAN.public_bytes().hex()],
                ["2.5.29.19", True, x509.BasicConstraints(False, None).public_bytes().hex()],
            ]
        jobs.append(
            {"msg": f"message {i} " + "z" * i, "subject": subjects[i % len(subjects)], "exts": exts}
        )
    return jobs


def _check_csr(job, row, key_point):
    data = bytes.fromhex(row["csr"])
    req = x509.load_der_x509_csr(data)
    assert req.is_signature_valid
    assert req.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert _point(req.public_key()) == key_point
    got = [(a.oid, a.value, a._type) for a in req.subject]
    want = [
        (ATTR_OIDS[k], v, _ASN1Type.PrintableString if k in PRINTABLE else _ASN1Type.UTF8String)
        for k, v in job["subject"]
    ]
    assert got == want
    assert len(req.subject.rdns) == len(job["subject"])
    if job["exts"]:
        assert req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == SAN
        bc = req.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca is False
    else:
        assert len(req.extensions) == 0 and list(req.attributes) == []
    assert (
        x509.load_pem_x509_csr(row["pem"].encode()).public_bytes(serialization.Encoding.DER) == data
    )


def _openssl_verify(path, inform):
    cmd = [require("openssl"), "req", "-verify", "-noout", "-inform", inform, "-in", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return proc.returncode == 0 and "verify OK" in proc.stdout + proc.stderr, proc


def test_bulk_keys_signatures_csrs(tmp_path):
    jobs = _jobs()
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    for i in range(COUNT):  # key files exist before the device writes them: mode 0600
        os.close(os.open(keys / f"key{i}.der", os.O_WRONLY | os.O_CREAT, 0o600))
    out = micropython(tmp_path, BULK, str(tmp_path / "jobs.json"), str(keys))
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == COUNT
    assert len({r["point"] for r in rows}) == COUNT, "every generated key differs"
    for i, (job, row) in enumerate(zip(jobs, rows, strict=True)):
        point = bytes.fromhex(row["point"])
        pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)  # on-curve check
        digest = hashlib.sha256(job["msg"].encode()).digest()
        sig = bytes.fromhex(row["sig"])
        assert decode_dss_signature(sig) == (int(row["r"], 16), int(row["s"], 16))
        pub.verify(sig, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        # The private key file: cryptography loads it, its public key matches, and OpenSSL
        # writes the very same PKCS#8 bytes; OpenSSL's RFC 6979 signature equals ours.
        key_der = (keys / f"key{i}.der").read_bytes()
        assert (keys / f"key{i}.der").stat().st_mode & 0o777 == 0o600
        key = serialization.load_der_private_key(key_der, None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
        assert key.public_key() == pub
        assert der_key(key) == key_der
        det = ec.ECDSA(Prehashed(hashes.SHA256()), deterministic_signing=True)
        assert key.sign(digest, det) == sig
        _check_csr(job, row, point)
        (tmp_path / f"req{i}.der").write_bytes(bytes.fromhex(row["csr"]))
        (tmp_path / f"req{i}.pem").write_text(row["pem"])
        for path, inform in ((tmp_path / f"req{i}.der", "DER"), (tmp_path / f"req{i}.pem", "PEM")):
            ok, proc = _openssl_verify(path, inform)
            assert ok, proc.stdout + proc.stderr
    # The negative control: one flipped signature bit fails both checkers.
    bad = bytearray.fromhex(rows[0]["csr"])
    bad[-5] ^= 0x01
    (tmp_path / "bad.der").write_bytes(bytes(bad))
    assert not _openssl_verify(tmp_path / "bad.der", "DER")[0]
    assert not x509.load_der_x509_csr(bytes(bad)).is_signature_valid


def test_from_der_reads_openssl_keys(tmp_path):
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    keys.append(ec.derive_private_key(5, ec.SECP256R1()))  # leading zero bytes in d
    fmt = serialization.PrivateFormat
    cases = [
        (der_key(k, f), _point(k.public_key()).hex())
        for k in keys
        for f in (fmt.PKCS8, fmt.TraditionalOpenSSL)
    ]
    pw = serialization.BestAvailableEncryption(b"pw")
    pem = serialization.Encoding.PEM
    cases += [
        (der_key(ec.generate_private_key(ec.SECP384R1())), "error: private key: curve is 1.3.132"),
        (der_key(rsa.generate_private_key(65537, 2048)), "error: private key: key algorithm"),
        (
            keys[0].private_bytes(serialization.Encoding.DER, fmt.PKCS8, pw),
            "error: private key: encr",
        ),
        (
            keys[0].private_bytes(pem, fmt.PKCS8, serialization.NoEncryption()),
            "error: private key: got PEM",
        ),
    ]
    paths = []
    for i, (blob, _) in enumerate(cases):
        path = tmp_path / f"k{i}.der"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        path.write_bytes(blob)
        paths.append(str(path))
    lines = micropython(tmp_path, LOAD, *paths).splitlines()
    for line, (_, want) in zip(lines, cases, strict=True):
        assert line.startswith(want), (line, want)


def test_keygen_sign_csr_in_48k_heap(tmp_path):
    # The board ships .mpy files; with them, keygen + sign + CSR fit a 48 KB GC heap.
    lib = compile_package(tmp_path / "lib", ("errors", "der", "derw", "p256", "csr"))
    script = r"""
import gc, hashlib
from upcert import p256, csr
gc.collect()
free = gc.mem_free()
k = p256.generate()
r, s = k.sign_digest(hashlib.sha256(b"x").digest())
req = csr.build(k, [("CN", "x" * 64), ("O", "Acme"), ("C", "DE")])
print(free, len(req), p256.verify_digest(k.public_point(), hashlib.sha256(b"x").digest(), r, s))
"""
    out = micropython(tmp_path, script, heapsize="48K", path=str(lib))
    free, size, ok = out.split()
    assert ok == "True" and int(size) > 200, out


# Runs under MicroPython: generate a key, write it (argv[1]) and a CSR (argv[2]).
KEYGEN = r"""
import sys
from upcert import p256, csr
key = p256.generate()
open(sys.argv[1], "wb").write(key.private_der())
open(sys.argv[2], "wb").write(csr.build(key, [("CN", "tls-dev")]))
"""

# Runs under MicroPython: load cert (argv[1]) + key (argv[2]) into mbedTLS, trust argv[3],
# connect to 127.0.0.1:argv[4] with client authentication, print what the server says.
TLS_CLIENT = r"""
import sys, socket, tls
rd = lambda p: open(p, "rb").read()
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.load_cert_chain(rd(sys.argv[1]), rd(sys.argv[2]))
ctx.load_verify_locations(rd(sys.argv[3]))
ctx.verify_mode = tls.CERT_REQUIRED
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", int(sys.argv[4]))[0][-1])
try:
    t = ctx.wrap_socket(s, server_hostname="localhost")
    t.write(b"ping")
    print("reply", t.read(16))
    t.close()
except OSError as exc:
    print("tls failed", exc)
"""


@pytest.mark.parametrize("matching", [True, False], ids=["own-key", "foreign-cert"])
def test_generated_key_works_in_mbedtls(tmp_path, matching):
    key_path, csr_path = tmp_path / "key.der", tmp_path / "csr.der"
    os.close(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600))
    micropython(tmp_path, KEYGEN, str(key_path), str(csr_path))
    req = x509.load_der_x509_csr(csr_path.read_bytes())
    assert req.is_signature_valid
    ca = LocalCa.init(tmp_path / "ca", key_type="ec")  # the project's own development CA
    # A certificate for the CSR's key, or (the control) for some other key.
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    cert = ca.issue_device("tls-dev", req.public_key() if matching else other)
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    (tmp_path / "cert.der").write_bytes(cert_der)
    (tmp_path / "ca.der").write_bytes(ca.certificate.public_bytes(serialization.Encoding.DER))
    with tls_server(server_context(ca)) as (port, seen):
        files = [str(tmp_path / "cert.der"), str(key_path), str(tmp_path / "ca.der")]
        out = micropython(tmp_path, TLS_CLIENT, *files, str(port))
    if matching:
        assert "reply b'pong'" in out, (out, seen)
        assert seen == [cert_der], "the server saw the issued certificate"
    else:
        assert "tls failed" in out, (out, seen)
        assert len(seen) == 1 and isinstance(seen[0], ssl.SSLError), seen  # CertificateVerify
