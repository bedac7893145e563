# TLS 1.2 to AWS IoT Core with MicroPython's built-in `tls` module (mbedTLS): context set-up
# (tlsctx.py, loaded meanwhile), the connector the agent calls, and the checks that refuse to
# connect on a bad clock/cert.
import socket
from gc import mem_alloc

import tls

from upcert import drop
from upcert.errors import CertificateError


def aws_suites():
    """The AWS IoT TLS 1.2 suites in mbedTLS names, in order (tlsctx.aws_suites)."""
    from upcert import tlsctx

    try:
        return tlsctx.aws_suites()
    finally:
        tlsctx = None
        drop("tlsctx")


def make_context(cert_der, key_der, roots_der_list, room=None):
    """SSLContext for AWS IoT: client cert + key (DER), every root trusted, AWS suites only
    (tlsctx.make: its code is in RAM only while a context is made, at a connect or a
    rotation's trial, not between). key_der None (a key in a secure element) is refused
    (ConnectError); bad DER raises CertificateError. room(): called just before the context
    object is made (app.rotation_connector frees the block it kept for it)."""
    from upcert import tlsctx

    try:
        return tlsctx.make(cert_der, key_der, roots_der_list, room)
    finally:
        tlsctx = None
        drop("tlsctx")


def context_bytes():
    """Bytes of the heap that one SSLContext object takes on this firmware: its mbedTLS state
    in one block (1792 on the 32-bit unix port, 3104 on the 64-bit one); what mbedTLS
    allocates later comes from elsewhere (libc, or the ESP-IDF heap on an ESP32). 0 when a
    collection ran meanwhile."""
    n = mem_alloc()
    tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    return max(mem_alloc() - n, 0)


def check_validity(cert, clock):
    """Refuse to connect on an untrusted clock or an out-of-date certificate; returns now.

    cert: `not_before`, `not_after` (port-epoch s); clock: `require_trusted()`, `now()`, `iso(t)`.
    Raises ClockNotSetError or CertificateError.
    """
    clock.require_trusted()
    now = clock.now()
    if now < cert.not_before:
        raise CertificateError(
            "device certificate not valid until %s (clock reads %s)"
            % (clock.iso(cert.not_before), clock.iso(now))
        )
    if now > cert.not_after:
        raise CertificateError("device certificate expired on %s" % clock.iso(cert.not_after))
    return now


class Ident:
    """What the agent keeps of its certificate (certlean.Cert c), so that the certificate
    reader can leave RAM: cert_id(), not_before, not_after (port epoch), issuer_cn. Made by the
    agent at each connect and by a rotation for the certificate it committed (rotate.py)."""

    def __init__(self, c):
        self.id = c.cert_id()
        self.not_before = c.not_before
        self.not_after = c.not_after
        self.issuer_cn = c.issuer_cn

    def cert_id(self):
        """AWS IoT certificateId (hex SHA-256 of the DER)."""
        return self.id

    def days_left(self, now):
        """Days (float) from now to not_after; negative once expired."""
        return (self.not_after - now) / 86400


class TlsSocket:
    """The TLS stream plus the TCP socket under it: the tls module's SSLSocket has no
    settimeout, and its setblocking(True) clears the TCP timeout, so both go to the TCP socket.
    Bound methods are copied, so reads and writes cost no extra Python call."""

    def __init__(self, tls_sock, tcp):
        self.read = tls_sock.read
        self.readinto = tls_sock.readinto
        self.write = tls_sock.write
        self.close = tls_sock.close  # also closes the TCP socket (stream ioctl CLOSE)
        self.setblocking = tcp.setblocking
        self.settimeout = tcp.settimeout
        # cipher() -> negotiated (suite, version), e.g. ('TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256',
        # 'TLSv1.2'); None on firmware whose SSLSocket lacks it.
        self.cipher = getattr(tls_sock, "cipher", None)


def tcp(host, port, timeout_s):
    """A TCP socket connected to host:port (DNS, then connect within timeout_s), for a TLS client
    to wrap (this module's Connector, tls12.Connector); ConnectError naming the cause."""
    try:
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    except OSError as e:
        from upcert import diagnose  # loaded only on a failure

        raise diagnose.connect_error(e, host, port) from None
    sock = socket.socket(ai[0], socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect(ai[-1])
    except BaseException as e:
        sock.close()
        if isinstance(e, Exception):
            from upcert import diagnose

            raise diagnose.connect_error(e, host, port) from None
        raise
    return sock


class Connector:
    """connect(host, port) -> TlsSocket: DNS, TCP with a timeout, TLS with SNI and hostname
    check. Failures close the socket and raise ConnectError naming the cause (diagnose.py)."""

    def __init__(self, ctx, timeout_s=15):
        self.ctx = ctx
        self.timeout_s = timeout_s

    def connect(self, host, port):
        sock = tcp(host, port, self.timeout_s)
        try:
            wrapped = self.ctx.wrap_socket(sock, server_hostname=host)
        except BaseException as e:
            sock.close()
            if isinstance(e, Exception):
                from upcert import diagnose  # loaded only on a failure

                raise diagnose.connect_error(e, host, port, True) from None
            raise  # KeyboardInterrupt / SystemExit pass through untouched
        return TlsSocket(wrapped, sock)
