"""The wire tap reads SNI, offered suites and the chosen suite off a real TLS 1.2 handshake."""

import socket
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from upcert.cloud.wiretap import WireTap


def _self_signed(tmp_path):
    import datetime as dt

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return tmp_path / "c.pem", tmp_path / "k.pem"


def test_tap_reads_handshake_and_counts_bytes(tmp_path):
    cert, key = _self_signed(tmp_path)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    sctx.maximum_version = ssl.TLSVersion.TLSv1_2
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        with sctx.wrap_socket(conn, server_side=True) as s:
            s.sendall(s.recv(100).upper())

    threading.Thread(target=serve, daemon=True).start()
    tap = WireTap("127.0.0.1", srv.getsockname()[1]).start()
    try:
        cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cctx.load_verify_locations(cert)
        cctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-SHA")
        cctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", tap.port)) as raw:
            with cctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"hello")
                assert s.recv(100) == b"HELLO"
                chosen = s.cipher()[0]
    finally:
        tap.stop()
    sess = tap.sessions[0]
    assert sess.sni == "localhost"
    assert 0xC02B in sess.offered and 0xC00A in sess.offered
    assert sess.version == "TLS 1.2" and sess.suite == chosen
    assert sess.bytes_up > 100 and sess.bytes_down > 300
