# Device tests for upcert.diagnose: each branch, with real exceptions from the unix port where
# one can be provoked here (refused, unresolvable, timeout, EOF, not-TLS, MemoryError); the
# verify-failure texts and mbedTLS codes are the exact values the port raised against mosquitto.
import errno
import socket

import tls
from fakesock import eq, has
from tlsserver import Hook, listener
from upcert import diagnose
from upcert.errors import ConnectError, MqttError
from upcert.tlsconn import Connector


def _real(step, timeout_s=2):
    # Failure of a real TLS handshake against a local listener that misbehaves via step(srv).
    srv, port = listener()
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_NONE
    try:
        Connector(Hook(ctx, lambda: step(srv)), timeout_s).connect("127.0.0.1", port)
    except ConnectError as e:
        return str(e)
    finally:
        srv.close()
    raise AssertionError("handshake did not fail")


def test_refused_real():
    s = socket.socket()
    try:
        s.connect(socket.getaddrinfo("127.0.0.1", 1)[0][-1])
    except OSError as e:
        has(
            diagnose.explain(e, "127.0.0.1", 1),
            "connection refused by 127.0.0.1:1",
            "wrong endpoint or port",
        )
        return
    finally:
        s.close()
    raise AssertionError("port 1 accepted a connection")


def test_unresolvable_real_and_esp32_code():
    # .invalid is reserved (RFC 6761 §6.4): no resolver may answer for it, and without one
    # getaddrinfo fails too. Either way a real error, never a silent pass.
    try:
        got = socket.getaddrinfo("no-such-host.invalid", 8883)
    except OSError as e:
        has(
            diagnose.explain(e, "no-such-host.invalid", 8883),
            "cannot resolve endpoint 'no-such-host.invalid'",
        )
    else:
        raise AssertionError("no-such-host.invalid resolved to %r, against RFC 6761" % (got,))
    for code in (-2, -3, -202):  # glibc EAI_NONAME, EAI_AGAIN; ESP32/lwIP
        has(
            diagnose.explain(OSError(code), "x.example", 8883),
            "cannot resolve endpoint 'x.example'",
        )


def test_handshake_timeout_real():
    has(_real(lambda srv: None, 1), "no answer from 127.0.0.1:", "in time")


def test_closed_in_handshake_real():
    def close(srv):
        c, _ = srv.accept()
        c.close()

    has(
        _real(close),
        "closed the connection in the TLS handshake",
        "broker rejected our certificate",
    )


def test_not_tls_real():
    keep = []

    def garbage(srv):
        c, _ = srv.accept()
        c.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        keep.append(c)

    has(_real(garbage), "does not speak TLS")
    keep[0].close()


def test_memory_error_real():
    try:
        bytearray(1 << 40)
    except MemoryError as e:
        eq(
            diagnose.explain(e, "h", 1, True).startswith("out of memory during TLS handshake"),
            True,
            "oom",
        )
        has(diagnose.explain(e), "out of memory")


def test_server_certificate_texts():
    # ValueError texts raised by wrap_socket against mosquitto (tests/host/test_device_tls.py).
    ca = ValueError("\nThe certificate is not correctly signed by the trusted CA\n")
    cn = ValueError("\nThe certificate Common Name (CN) does not match with the expected CN\n")
    exp = ValueError("\nThe certificate validity has expired\n")
    fut = ValueError("\nThe certificate validity starts in the future\n")
    has(
        diagnose.explain(ca, "h", 1),
        "server certificate not trusted: signed by a CA that is not in roots.der",
    )
    has(
        diagnose.explain(cn, "iot.example", 1), "not issued for SNI 'iot.example'", "check endpoint"
    )
    has(diagnose.explain(exp, "h", 1), "expired")
    has(diagnose.explain(fut, "h", 1), "clock")
    generic = diagnose.explain(OSError(-0x2700), "ep", 1)  # MBEDTLS_ERR_X509_CERT_VERIFY_FAILED
    has(
        generic,
        "server certificate not trusted: unknown CA, wrong hostname for SNI 'ep', or expired",
        "roots.der",
    )


def test_broker_rejects_our_certificate():
    for e in (OSError(32), OSError(errno.ECONNRESET), OSError(-0x7280, "MBEDTLS_ERR_SSL_CONN_EOF")):
        has(
            diagnose.explain(e, "h", 8883, True),
            "h:8883 closed the connection in the TLS handshake",
            "broker rejected our certificate (unknown CA, inactive/revoked in the registry, or expired)",
        )
    alert = OSError(-0x7780, "MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE")
    has(diagnose.explain(alert, "h", 8883), "broker rejected our certificate", "TLS alert")


def test_errno_branches():
    has(diagnose.explain(OSError(errno.ETIMEDOUT), "h", 1), "no answer from h:1")
    has(diagnose.explain(OSError(errno.EHOSTUNREACH), "h", 1), "h:1 unreachable")
    has(diagnose.explain(OSError(errno.ENOMEM), "h", 1, True), "out of memory during TLS handshake")
    has(
        diagnose.explain(OSError(errno.ECONNRESET), "h", 1), "connection closed by h:1", "client id"
    )
    has(
        diagnose.explain(OSError(-0x7F00, "MBEDTLS_ERR_SSL_ALLOC_FAILED"), "h", 1, True),
        "out of memory",
    )
    has(
        diagnose.explain(OSError(-0x7100, "MBEDTLS_ERR_SSL_BAD_INPUT_DATA"), "h", 1),
        "-28928 MBEDTLS_ERR_SSL_BAD_INPUT_DATA",
    )
    has(diagnose.explain(OSError(errno.EIO)), "the broker", "EIO")


def test_key_and_cert_value_errors():
    eq(
        diagnose.explain(ValueError("invalid key")),
        "mbedTLS: invalid key: store keys (PKCS#8) and certificates as DER",
        "key",
    )
    has(diagnose.explain(ValueError("invalid cert")), "invalid cert", "DER")


def test_connack_codes():
    eq(diagnose.connack(5), "not authorized (CONNACK 5): policy does not allow this client id", "5")
    for rc, text in (
        (1, "protocol version"),
        (2, "client id"),
        (3, "unavailable"),
        (4, "user name"),
    ):
        has(diagnose.connack(rc), text, "CONNACK %d" % rc)
    has(diagnose.connack(77), "unknown CONNACK code 77")


def test_already_explained_and_other_errors():
    eq(diagnose.explain(MqttError("no PUBACK"), "h", 1), "no PUBACK", "passthrough")
    has(diagnose.explain(KeyError("x")), "KeyError")
    e = diagnose.connect_error(OSError(errno.ECONNREFUSED), "h", 2)
    eq(isinstance(e, ConnectError), True, "ConnectError")
    has(str(e), "connection refused by h:2")


def test_reason_codes_decided_without_text():
    from upcert import errors as E

    cases = (
        (OSError(errno.ECONNREFUSED), False, E.NETWORK),
        (OSError(errno.ETIMEDOUT), False, E.TIMEOUT),
        (OSError(errno.ECONNRESET), True, E.REFUSED),
        (OSError(errno.ECONNRESET), False, E.CLOSED),
        (OSError(-0x7780), False, E.REFUSED),  # TLS fatal alert
        (OSError(-0x2700), False, E.SERVER),  # server certificate did not verify
        (OSError(errno.ENOMEM), False, E.MEMORY),
        (MemoryError(), False, E.MEMORY),
        (ValueError("The certificate is not correctly signed"), True, E.SERVER),
        (ValueError("invalid key"), False, E.CONFIG),
        (OSError("[addrinfo error -2]"), False, E.NETWORK),
        (MqttError("any words at all", E.PROTOCOL), True, E.PROTOCOL),
        (KeyError("x"), False, None),
    )
    for exc, hs, want in cases:
        eq(diagnose.reason(exc, hs), want, repr(exc))
    e = diagnose.connect_error(OSError(errno.ETIMEDOUT), "h", 1)
    eq(e.reason, E.TIMEOUT, "connect_error carries the code")
