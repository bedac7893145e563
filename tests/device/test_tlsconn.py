# Device tests for upcert.tlsconn on the unix port: AWS suites, context refusals, validity
# checks, the connector's error paths against a local listener, the TlsSocket wrapper.
# Successful handshakes with real certificates are in tests/host/test_device_tls.py.
import socket
from binascii import a2b_base64

import tls
from agentfakes import CERT_NOT_AFTER, CERT_NOT_BEFORE, DAY, FakeClock
from certdata import EC_DER
from fakesock import eq, has, raises
from tlsserver import Hook, listener
from upcert import tlsconn
from upcert.errors import CertificateError, ClockNotSetError, ConnectError
from upcert.x509 import Certificate

# Amazon Root CA 3 (ECC P-256), public trust anchor of AWS IoT (Debian ca-certificates).
AMAZON_ROOT_CA_3 = a2b_base64(
    "MIIBtjCCAVugAwIBAgITBmyf1XSXNmY/Owua2eiedgPySjAKBggqhkjOPQQDAjA5MQswCQYDVQQG"
    "EwJVUzEPMA0GA1UEChMGQW1hem9uMRkwFwYDVQQDExBBbWF6b24gUm9vdCBDQSAzMB4XDTE1MDUy"
    "NjAwMDAwMFoXDTQwMDUyNjAwMDAwMFowOTELMAkGA1UEBhMCVVMxDzANBgNVBAoTBkFtYXpvbjEZ"
    "MBcGA1UEAxMQQW1hem9uIFJvb3QgQ0EgMzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABCmXp8ZB"
    "f8ANm+gBG1bG8lKlui2yEujSLtf6ycXYqm0fc4E7O5hrOXwzpcVOho6AF2hiRVd9RFgdszflZwjr"
    "Zt6jQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgGGMB0GA1UdDgQWBBSrttvXBp43"
    "rDCGB5Fwx5zEGbF4wDAKBggqhkjOPQQDAgNJADBGAiEA4IWSoxe3jfkrBqWTrBqYaGFy+uGh0Psc"
    "eGCmQ5nFuMQCIQCcAu/xlJyzlvnrxir4tiz+OpAUFteMYyRIHN8wfdVoOw=="
)


# AWS IoT Developer Guide ("Transport security in AWS IoT Core"), OpenSSL name -> the mbedTLS name we must offer.
OPENSSL_TO_MBEDTLS = (
    ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"),
    ("ECDHE-RSA-AES128-GCM-SHA256", "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256"),
    ("ECDHE-ECDSA-AES128-SHA256", "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256"),
    ("ECDHE-RSA-AES128-SHA256", "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256"),
    ("ECDHE-ECDSA-AES128-SHA", "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA"),
    ("ECDHE-RSA-AES128-SHA", "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA"),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384"),
    ("ECDHE-RSA-AES256-GCM-SHA384", "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"),
    ("ECDHE-ECDSA-AES256-SHA384", "TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA384"),
    ("ECDHE-RSA-AES256-SHA384", "TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA384"),
    ("ECDHE-ECDSA-AES256-SHA", "TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA"),
    ("ECDHE-RSA-AES256-SHA", "TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA"),
    ("AES128-GCM-SHA256", "TLS-RSA-WITH-AES-128-GCM-SHA256"),
    ("AES128-SHA256", "TLS-RSA-WITH-AES-128-CBC-SHA256"),
    ("AES128-SHA", "TLS-RSA-WITH-AES-128-CBC-SHA"),
    ("AES256-GCM-SHA384", "TLS-RSA-WITH-AES-256-GCM-SHA384"),
    ("AES256-SHA256", "TLS-RSA-WITH-AES-256-CBC-SHA256"),
    ("AES256-SHA", "TLS-RSA-WITH-AES-256-CBC-SHA"),
)


def test_aws_suites_exact_and_offered_by_this_mbedtls():
    eq(tlsconn.aws_suites(), tuple(m for _, m in OPENSSL_TO_MBEDTLS), "AWS suites, in order")
    have = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT).get_ciphers()
    for s in tlsconn.aws_suites():
        if s not in have:
            raise AssertionError(s + " missing from get_ciphers()")


def test_context_bytes_is_one_context_object():
    # The size of the spare block a rotation keeps for its new context (app.py): the SSLContext
    # object alone (1792 B on the 32-bit unix port, 3104 B on the 64-bit one).
    n = tlsconn.context_bytes()
    if not 1024 <= n <= 8192:
        raise AssertionError("context_bytes() = %d" % n)


def test_secure_element_key_refused_without_fallback():
    e = raises(ConnectError, tlsconn.make_context, b"cert", None, [AMAZON_ROOT_CA_3])
    has(str(e), "secure element", "takes only key bytes", "upcert's own TLS client")


def test_roots_checked():
    has(str(raises(CertificateError, tlsconn.make_context, b"c", b"k", [])), "no trust anchors")
    e = raises(CertificateError, tlsconn.make_context, b"c", b"k", [AMAZON_ROOT_CA_3, b"junk"])
    has(str(e), "trust anchor 2 in roots.der")


def test_bad_key_named_not_printed():
    secret = b"\x30\x81\x87SECRETKEYBYTES"
    e = raises(CertificateError, tlsconn.make_context, b"c", secret, [AMAZON_ROOT_CA_3])
    has(str(e), "invalid key", "DER")
    if "SECRET" in str(e):
        raise AssertionError("key bytes in the message")


def test_check_validity():
    cert = Certificate(EC_DER)
    eq(tlsconn.check_validity(cert, FakeClock(CERT_NOT_BEFORE)), CERT_NOT_BEFORE, "first second")
    eq(tlsconn.check_validity(cert, FakeClock(CERT_NOT_AFTER)), CERT_NOT_AFTER, "last second")
    raises(ClockNotSetError, tlsconn.check_validity, cert, FakeClock(trusted=False))
    e = raises(CertificateError, tlsconn.check_validity, cert, FakeClock(CERT_NOT_BEFORE - DAY))
    eq(
        str(e),
        "device certificate not valid until 2026-01-01T00:00:00Z (clock reads 2025-12-31T00:00:00Z)",
        "msg",
    )
    e = raises(CertificateError, tlsconn.check_validity, cert, FakeClock(CERT_NOT_AFTER + 1))
    eq(str(e), "device certificate expired on 2049-12-31T23:59:59Z", "msg")


def test_connector_refused_and_unresolvable():
    c = tlsconn.Connector(tls.SSLContext(tls.PROTOCOL_TLS_CLIENT), 2)
    has(str(raises(ConnectError, c.connect, "127.0.0.1", 1)), "connection refused by 127.0.0.1:1")
    has(
        str(raises(ConnectError, c.connect, "nowhere.invalid", 8883)),
        "cannot resolve endpoint 'nowhere.invalid'",
    )


def test_connector_sends_sni_and_times_out():
    srv, port = listener()
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_NONE
    hook = Hook(ctx, lambda: None)
    try:
        e = raises(ConnectError, tlsconn.Connector(hook, 1).connect, "localhost", port)
    finally:
        srv.close()
    eq(hook.hostname, "localhost", "server_hostname (SNI + hostname check)")
    has(str(e), "no answer from localhost:%d" % port)


def test_connector_lets_keyboard_interrupt_through():
    srv, port = listener()

    def ctrl_c():
        raise KeyboardInterrupt

    try:
        raises(
            KeyboardInterrupt, tlsconn.Connector(Hook(None, ctrl_c), 1).connect, "127.0.0.1", port
        )
    finally:
        srv.close()


class _Tls:
    def __init__(self):
        self.log = []

    def read(self, n):
        return b"r" * n

    def readinto(self, b):
        return 0

    def write(self, b):
        self.log.append(bytes(b))
        return len(b)

    def close(self):
        self.log.append("close")


def test_tls_socket_wrapper():
    t = _Tls()
    tcp = socket.socket()
    w = tlsconn.TlsSocket(t, tcp)
    eq(w.read(2), b"rr", "read")
    eq(w.write(b"abc"), 3, "write")
    w.settimeout(0.5)  # goes to the TCP socket: the SSLSocket has no settimeout
    w.setblocking(False)
    eq(w.cipher, None, "no cipher() on this SSLSocket")
    w.close()
    eq(t.log, [b"abc", "close"], "calls")
    tcp.close()
