# Turns connection failures (socket errno, mbedTLS codes, getaddrinfo, CONNACK) into one line
# naming a cause a person can act on. Pure functions: no I/O, so every branch is unit-tested.
import errno

from micropython import const

from upcert.errors import (
    CLOSED,
    CONFIG,
    MEMORY,
    NETWORK,
    REFUSED,
    SERVER,
    TIMEOUT,
    ConnectError,
    UpcertError,
)

# How the `tls` module reports errors (MicroPython extmod/modtls_mbedtls.c, checked on v1.29):
# - a failed certificate verification raises ValueError(<mbedtls_x509_crt_verify_info text>);
#   builds where that text cannot be made raise OSError(MBEDTLS_ERR_X509_CERT_VERIFY_FAILED);
# - errors of the socket below (-256 < code < 0 inside mbedTLS) come back as OSError(errno);
# - MBEDTLS_ERR_SSL_ALLOC_FAILED (-0x7F00) becomes OSError(ENOMEM);
# - any other mbedTLS code: OSError(code, "MBEDTLS_ERR_...") (the name only with MBEDTLS_ERROR_C).
# MBEDTLS_ERR_NET_CONN_RESET (-0x0050, net_sockets.h) never appears: MicroPython feeds mbedTLS
# through its own socket callbacks, so a reset arrives as OSError(ECONNRESET).
_VERIFY_FAILED = -0x2700  # MBEDTLS_ERR_X509_CERT_VERIFY_FAILED, mbedtls/x509.h
_NOT_TLS = const(-0x7200)  # MBEDTLS_ERR_SSL_INVALID_RECORD, mbedtls/ssl.h
# Peer closed mid-handshake: ECONNRESET, EPIPE (32 in py/mperrno.h, Linux and lwIP; missing from
# MicroPython's errno module), MBEDTLS_ERR_SSL_CONN_EOF -0x7280 (ssl.h).
_CLOSED = (errno.ECONNRESET, 32, -0x7280)
# MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE -0x7780, _BAD_CERTIFICATE -0x7A00, _HANDSHAKE_FAILURE
# -0x6E00 (ssl.h, 3.x): the peer aborted the handshake.
_ALERT = const((-0x7780, -0x7A00, -0x6E00))
# ETIMEDOUT, EAGAIN (a timed-out socket on some ports), MBEDTLS_ERR_SSL_TIMEOUT -0x6800.
_SLOW = (errno.ETIMEDOUT, errno.EAGAIN, -0x6800)
_OOM = (errno.ENOMEM, -0x7F00)  # MBEDTLS_ERR_SSL_ALLOC_FAILED
_REJECTED = (
    "broker rejected our certificate (unknown CA, inactive/revoked in the registry, or expired)"
)

# MQTT 3.1.1 §3.2.2.3 CONNACK return codes 1..5.
_CONNACK = const((
    "unacceptable protocol version",
    "client id rejected: check client_id",
    "server unavailable: retry later",
    "bad user name or password",
    "policy does not allow this client id",
))


def connack(rc):
    """Text for an MQTT CONNACK return code (MQTT 3.1.1 §3.2.2.3)."""
    if 0 < rc < 6:
        return "%s (CONNACK %d): %s" % (
            "not authorized" if rc == 5 else "refused",
            rc,
            _CONNACK[rc - 1],
        )
    return "broker refused the connection with unknown CONNACK code %d" % rc


def _verify(text, host):
    # Strings of mbedtls_x509_crt_verify_info (library/x509_crt.c, x509_crt_verify_strings).
    why = []
    for key, msg in (
        ("correctly signed", "signed by a CA that is not in roots.der"),
        ("Common Name", "not issued for SNI '%s' (wrong hostname: check endpoint)" % host),
        ("has expired", "expired (or the device clock is wrong)"),
        ("in the future", "not valid yet (is the device clock right?)"),
        ("revoked", "revoked"),
    ):
        if key in text:
            why.append(msg)
    return "server certificate not trusted: " + (
        "; ".join(why)
        or "unknown CA, wrong hostname for SNI '%s', or expired (check roots.der and endpoint)"
        % host
    )


def explain(exc, host=None, port=None, handshake=False):
    """One line naming the likely cause of `exc`.

    host/port name the endpoint; handshake=True when `exc` came from the TLS handshake, where a
    closed connection usually means the broker refused our certificate.
    """
    return _why(exc, host, port, handshake)[1]


def reason(exc, handshake=False):
    """The reason code (upcert.errors: REFUSED, CLOSED, TIMEOUT, NETWORK, SERVER, MEMORY, CLOCK,
    PROTOCOL, CONFIG, ...) of exc, decided on its type, its .reason or its error number, never on
    its text; None when nothing is known."""
    return _why(exc, None, None, handshake)[0]


def refused(exc):
    """True when exc (from connecting: ConnectError, MqttError, OSError) says the broker refused
    our certificate or closed the connection on it; False when the clock, the network or the
    server is to blame, or the broker is busy (CONNACK 1-3). A rollback can help only here."""
    return reason(exc, True) in (REFUSED, CLOSED)


def _why(exc, host, port, handshake):
    # (reason code, text) for exc.
    if isinstance(exc, UpcertError):
        return exc.reason, str(exc)
    where = "the broker" if host is None else "%s:%s" % (host, port)
    if isinstance(exc, MemoryError):
        return MEMORY, "out of memory" + (" during TLS handshake" if handshake else "") + ": free RAM"
    if isinstance(exc, ValueError):
        text = str(exc)
        if "invalid" in text:  # "invalid key" / "invalid cert" from load_cert_chain
            return CONFIG, "mbedTLS: %s: store keys (PKCS#8) and certificates as DER" % text
        return SERVER, _verify(text, host)
    if not isinstance(exc, OSError):
        return None, "%s: %s" % (type(exc).__name__, exc)
    code = exc.args[0] if exc.args else None
    if not isinstance(code, int) or code == -202 or -256 < code < 0:
        # unix: OSError('[addrinfo error -2]'); ESP32 (lwIP): OSError(-202), -EAI_FAIL. modtls
        # turns -256 < code < 0 into positive errno values, so small negatives are resolver codes.
        if "addrinfo" in str(exc) or isinstance(code, int):
            return NETWORK, "cannot resolve endpoint '%s' (%s): check endpoint and DNS/network" % (
                host, exc)
        return NETWORK, "network error talking to %s: %s" % (where, exc)
    if code == errno.ECONNREFUSED:
        return NETWORK, "connection refused by %s: wrong endpoint or port, or broker down" % where
    if code in _SLOW:
        return TIMEOUT, "no answer from %s in time: network down, firewall, or wrong endpoint" % where
    if code == errno.EHOSTUNREACH:
        return NETWORK, "%s unreachable: network down or wrong endpoint" % where
    if code in _OOM:
        return _why(MemoryError(), host, port, handshake)
    if code in _CLOSED:
        if handshake:
            return REFUSED, "%s closed the connection in the TLS handshake: %s, or not a TLS port" % (
                where, _REJECTED)
        return CLOSED, (
            "connection closed by %s: policy violation, another connection with our client id,"
            " or our certificate was deactivated" % where
        )
    if code in _ALERT:
        return REFUSED, "%s: %s, or no cipher suite in common (TLS alert)" % (where, _REJECTED)
    if code == _VERIFY_FAILED:
        return SERVER, _verify("", host)
    if code == _NOT_TLS:
        return SERVER, "%s does not speak TLS: wrong port?" % where
    name = exc.args[1] if len(exc.args) > 1 else errno.errorcode.get(code, "")
    return NETWORK, "network error talking to %s: %d %s" % (where, code, name)


def connect_error(exc, host, port, handshake=False):
    """ConnectError carrying explain()'s text and reason() for a failed connection to host:port."""
    r, text = _why(exc, host, port, handshake)
    return ConnectError(text, r)


def alert_name(desc):
    """The name of TLS alert `desc` (RFC 5246 §7.2, RFC 7301 §3.2), for upcert's own TLS
    client's messages."""
    return {
        10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
        40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
        44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
        47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
        51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security",
        80: "internal_error", 90: "user_canceled", 100: "no_renegotiation",
        110: "unsupported_extension", 120: "no_application_protocol",
    }.get(desc, "unknown")
