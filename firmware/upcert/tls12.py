# upcert's own TLS 1.2 client (RFC 5246) for stock MicroPython: the key may stay in a secure
# element (every private-key operation goes through a signer), and ALPN (RFC 7301) is offered
# for AWS IoT's port 443. In C it uses only what the stock ESP32 port has: cryptolib AES
# (ECB, CBC), hashlib SHA-256, os.urandom and sockets; GCM, HMAC, the PRF, P-256, RSA and the
# certificate chain are MicroPython (gcm.py, hmac256.py, p256.py, rsa.py, chain.py).
#
# In RAM: this module and tls12rec (the record layer) while a connection is open; the
# handshake's parts are loaded one after another and dropped (tls12hs: the hellos and the
# server's Certificate; chain, certlean: its path checks; tls12kx with sigs, p256 or rsa:
# the signatures, the key exchange and Finished), so the handshake's peak heap is the
# largest part's, not their sum.
#
# Suites, AWS IoT's TLS 1.2 list in this order ("Transport security in AWS IoT Core"):
# ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES128-SHA256,
# ECDHE-RSA-AES128-SHA256; ECDHE on P-256 only (RFC 8422). Client certificate with
# CertificateVerify (ecdsa_secp256r1_sha256), extended master secret (RFC 7627), secure
# renegotiation indication (RFC 5746) but no renegotiation, SNI (RFC 6066).
from upcert.errors import REFUSED, SERVER
from upcert.tls12rec import (  # noqa: F401 (the names this client has always offered)
    CLOSE_NOTIFY,
    INTERNAL_ERROR,
    SUITES,
    Record,
    TlsError,
    fail,
)

# the handshake's modules, dropped after it (p256 and hmac256 too: the record protection
# keeps what it uses)
_PARTS = ("tls12hs", "chain", "certlean", "der", "tls12kx", "sigs", "rsa", "sha512", "p256",
          "keyder", "derw", "hmac256")


def connector(config, store, clock, cert, key, roots, chip):
    """connect(host, port) with this client for the agent (app.connector): the chip's signer
    (key None: the active identity; else a key reference, e.g. a staged one), else the key's
    scalar (key_scalar: a p256.Key is made for each handshake only), ALPN from
    config["alpn"]."""
    if chip:
        signer = store.signer(key)
    else:
        signer = store.signer() if key is None else key_scalar(key)
    if signer is None:
        from upcert.errors import StoreError

        raise StoreError("%s holds neither a private key nor a signer: run `upcert provision`"
                         % store.location)
    alpn = [n.encode() for n in config["alpn"]] or None
    return Connector(cert, signer, roots, clock, alpn).connect


def key_scalar(der):
    """A software key's DER (PKCS#8 or SEC 1, checked: P-256, its public key) as its 32-byte
    scalar, what TlsClient takes as the signer of a software key: read once here, so that no
    handshake loads the DER reader beside its key exchange (its peak heap). CertificateError for
    a key that is not a P-256 key."""
    from upcert import drop
    from upcert.p256 import Key

    d = Key.from_der(bytes(der))._d.to_bytes(32, "big")
    Key = None
    drop("p256", "keyder", "der", "derw")
    return d


class Connector:
    """connect(host, port) -> TlsClient, as tlsconn.Connector does for the built-in tls module:
    DNS, TCP with a timeout, then this module's handshake with the identity (certificate DER,
    signer). clock: now(), trusted(). Failures close the socket and raise ConnectError or
    TlsError naming the cause; the chain's readers leave RAM after each handshake."""

    def __init__(self, cert, signer, roots, clock, alpn=None, timeout_s=15):
        self.identity = (cert, signer)
        self.roots = roots
        self.clock = clock
        self.alpn = alpn
        self.timeout_s = timeout_s

    def connect(self, host, port):
        from upcert.tlsconn import tcp

        sock = tcp(host, port, self.timeout_s)
        return TlsClient(sock, host, self.roots, self.clock.now(), self.identity, self.alpn,
                         self.timeout_s, self.clock.trusted())


class TlsClient(Record):
    """A TLS 1.2 connection over a connected TCP socket, socket-like for upcert.mqtt: read(n),
    readinto(buf, n), write(buf), setblocking(flag), settimeout(s), close(), cipher().

    TlsClient(sock, host, roots, now, identity, alpn=None, timeout_s=15, trusted=True):
    roots: DER trust anchors; now: seconds (port epoch) to judge validity by; identity:
    (certificate DER, signer) where the signer has sign_digest(digest32) -> (r, s) (p256.Key,
    atecc.Signer) and may have ecdhe(peer_point65) -> (our_point65, shared_x32) (atecc.Signer:
    the ephemeral key stays in the chip; else p256.ecdhe makes one), or is the P-256 key as
    bytes: its 32-byte scalar (key_scalar, what the agent's connector gives) or its DER (a
    p256.Key is made for the handshake only, so p256 is not resident between);
    alpn: protocol names (bytes) to offer, the server must pick one. The handshake runs in the
    constructor; a failure sends the alert, closes the socket and raises TlsError.
    """

    def __init__(self, sock, host, roots, now, identity, alpn=None, timeout_s=15, trusted=True):
        Record.__init__(self, sock, timeout_s)
        try:
            self._handshake(host, roots, now, identity, alpn, trusted)
        except TlsError as e:
            self.abort(None if e.received else e.alert)  # never echo the server's own alert
            if e.received:  # the server refused the handshake: our certificate, most likely
                e.reason = REFUSED
            raise
        except MemoryError:
            self.abort(INTERNAL_ERROR)
            raise
        except Exception as e:
            self.abort(INTERNAL_ERROR)
            raise fail(INTERNAL_ERROR, "TLS handshake: %s" % (e,)) from None
        finally:
            from upcert import drop

            drop(*_PARTS)  # what a failed handshake left loaded
        self._hs = self._th = None

    def _handshake(self, host, roots, now, identity, alpn, trusted):
        # Each part's code is in RAM only while that part runs; each is called from a function
        # of its own, so that no stale reference on this frame's stack keeps it there.
        hello = self._hello(host, alpn)  # (client random, server random, EMS?, certificates)
        leaf, todo = _walk(hello[3], roots, host, now, trusted)
        hello = hello[:3]  # the certificates stay in RAM as long as `todo` points into them
        self._finish(hello, leaf, todo, identity)

    def _hello(self, host, alpn):
        from upcert import drop, tls12hs

        try:
            return tls12hs.hello(self, host, alpn)
        finally:
            tls12hs = None
            drop("tls12hs")

    def _finish(self, hello, leaf, todo, identity):
        from upcert import tls12kx

        tls12kx.finish(self, hello, leaf, todo, identity)


def _walk(certs, roots, host, now, trusted):
    # chain.walk(), then chain.py and the certificate reader out of RAM
    from upcert import chain, drop

    try:
        return chain.walk(certs, roots, host, now, trusted)
    except chain.ChainError as e:
        raise fail(e.alert, "server certificate: %s" % e, SERVER) from None
    finally:
        chain = None
        drop("chain", "certlean")
