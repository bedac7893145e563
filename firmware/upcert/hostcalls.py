# What the host tools call on a board over the raw REPL (host_tools/upcert/board/transport.py
# Board.call): one function per operation, plain literals in, one repr()-able literal out.
# Provisioning, status and the certificate view of `upcert cert inspect --device`; the ATECC608
# steps are in hostcalls_atecc.py. The agent never imports them: they cost nothing resident.
import hashlib
from binascii import hexlify

CONFIG = "/upcert.d/config.json"
ROOTS = "/upcert.d/roots.der"
# A key made on the board for a certificate the host is still getting (`upcert provision --aws`):
# on the flash, so that it outlives the host's calls, until store_pending() moves it into the
# store with its certificate. It is replaced by every new_key_csr() and removed by store_pending()
# and discard_pending(); a certificate for it exists only once the host has its CSR, and stays
# INACTIVE until the board holds the pair, so a key left here by a power cut opens nothing.
PENDING = "/upcert.d/pending-key.der"


def _store(config_path):
    # The board's own store for the config at config_path (board.store, as the agent gets it),
    # so host and device agree on the layout.
    import board

    from upcert import config

    return board.store(config.load(config_path))


def _sha(data):
    return hexlify(hashlib.sha256(data).digest()).decode()


def write_credentials(cert, key, config_path=CONFIG):
    """Make (cert DER, key DER) the board's identity through the store the config names.
    Returns True."""
    _store(config_path).write(cert, key)
    return True


def new_key_csr(subject, pending=PENDING):
    """A new P-256 key made here (upcert.p256, from os.urandom), kept in `pending` (written to
    *.tmp, then renamed: a power cut leaves the old file or the new one), and the DER CSR for it
    (upcert.csr) with subject [[attribute, value], ...]. The key never leaves the board."""
    import os

    from upcert import csr, p256

    key = p256.generate()
    with open(pending + ".tmp", "wb") as f:
        f.write(key.private_der())
    os.rename(pending + ".tmp", pending)
    return csr.build(key, subject)


def store_pending(cert, config_path=CONFIG, pending=PENDING):
    """Make (cert DER, the pending key) the board's identity through the store the config names,
    once the certificate is checked to be for that key (CertificateError otherwise, nothing
    written), then remove the pending key. Returns True."""
    import os

    from upcert.errors import StoreError

    try:
        with open(pending, "rb") as f:
            key = f.read()
    except OSError:
        raise StoreError("no pending key at %s: run the provisioning again" % pending) from None
    check_pair(cert, key)
    _store(config_path).write(cert, key)
    os.remove(pending)
    return True


def discard_pending(pending=PENDING):
    """Remove a pending key (and a half-written one); True when there was one."""
    import os

    found = False
    for path in (pending + ".tmp", pending):
        try:
            os.remove(path)
            found = True
        except OSError:
            pass
    return found


def credential_digests(config_path=CONFIG):
    """[hex SHA-256 of the certificate, of the private key (None when the key stays in a
    secure element)] as the store reads them back."""
    s = _store(config_path)
    cert = _sha(s.certificate())
    key = s.private_key()
    return [cert, None if key is None else _sha(key)]


def load_tls(config_path=CONFIG, roots_path=ROOTS):
    """Load the store's pair and the trust anchors into a TLS context as the agent does
    (tlsconn.make_context: CertificateError or ConnectError when refused), and check that the
    private key is the certificate's key (mbedTLS loads a mismatched pair without a word).
    Returns {'roots': trust anchors loaded, 'pair': 'EC'|'RSA' (checked) or None (a key type
    not checked here)}."""
    from upcert import tlsconn
    from upcert.store import load_roots

    s = _store(config_path)
    cert, key = s.certificate(), s.private_key()
    roots = load_roots(roots_path)
    tlsconn.make_context(cert, key, roots)
    return {"roots": len(roots), "pair": check_pair(cert, key)}


def check_pair(cert, key):
    """'EC' or 'RSA' when `key` (PKCS#8 or SEC 1 / PKCS#1 DER) is the private key of `cert`
    (DER); None for a key type this does not check (EC other than P-256). Raises
    CertificateError when the key is another one, or cannot be read."""
    from upcert.errors import CertificateError
    from upcert.x509 import Certificate

    c = Certificate(cert)
    if c.key_type == "EC" and c.key_bits == 256:
        from upcert.p256 import Key

        ok = Key.from_der(key).public_point() == bytes(c.public_key)
    elif c.key_type == "RSA":
        ok = _rsa_modulus(key) == bytes(c.public_key)
    else:
        return None
    if not ok:
        raise CertificateError("the private key in the store is not the certificate's key: "
                               "run `upcert provision` with the matching pair")
    return c.key_type


def _rsa_modulus(key):
    # PrivateKeyInfo (RFC 5208 §5) around, or a bare, RSAPrivateKey (RFC 8017 A.1.2): version,
    # modulus, ...
    from upcert import der
    from upcert.der import INTEGER, SEQUENCE

    buf, s, e = der.single(key, SEQUENCE, "private key")
    p = der.expect(buf, s, e, INTEGER, "private key version")[1]
    if p < e and buf[p] == SEQUENCE:  # PKCS#8: the algorithm, then the key in an OCTET STRING
        p = der.expect(buf, p, e, SEQUENCE, "privateKeyAlgorithm")[1]
        os_, oe = der.expect(buf, p, e, 0x04, "privateKey")
        buf, s, e = der.single(buf[os_:oe], SEQUENCE, "RSAPrivateKey")
        p = der.expect(buf, s, e, INTEGER, "RSAPrivateKey version")[1]
    ms, me = der.expect(buf, p, e, INTEGER, "RSA modulus")
    return bytes(der.read_uint_bytes(buf, ms, me))


def status(config_path=CONFIG):
    """What the board holds, for `upcert board status`: thing, endpoint, the store's
    describe(), and the certificate's id, expiry and CN. What cannot be read is in 'error'
    ("Type: message"), never raised."""
    import time

    import board

    out = {"board": getattr(board, "NAME", "?")}
    try:
        from upcert import config
        from upcert.x509 import Certificate

        cfg = config.load(config_path)
        out["thing"] = cfg["thing"]
        out["endpoint"] = "%s:%d" % (cfg["endpoint"], cfg["port"])
        s = board.store(cfg)
        out["store"] = s.describe()
        c = Certificate(s.certificate())
        out["cert_id"] = c.cert_id()
        out["not_after"] = "%04d-%02d-%02dT%02d:%02d:%02dZ" % c.not_after_tuple
        out["days_left"] = round(c.days_left(time.time()), 1)
        out["subject_cn"] = c.subject_cn
    except Exception as e:  # StoreError, ConfigError, CertificateError, OSError: reported
        out["error"] = "%s: %s" % (type(e).__name__, e)
    return out


def certificate_view(data):
    """The device reader's view of the first certificate in `data` (PEM: the first CERTIFICATE
    block; DER: one, or several concatenated like roots.der), for `upcert cert inspect
    --device`: a dict of the reader's fields and 'count', or {'error': reason}."""
    from upcert import der, x509
    from upcert.errors import CertificateError

    try:
        if data[:1] != b"\x30" and data.find(b"-----BEGIN") >= 0:
            count = data.count(b"-----BEGIN CERTIFICATE-----")
            c = x509.load(data)
        else:
            try:
                parts = der.split_certs(data) or [data]
            except CertificateError:
                parts = [data]  # garbage after a certificate: let the reader say where
            count = len(parts)
            c = x509.Certificate(parts[0])
            parts = data = None
        return {"subject_cn": c.subject_cn, "issuer_cn": c.issuer_cn, "serial": c.serial,
                "not_before": c.not_before_tuple, "not_after": c.not_after_tuple,
                "key_type": c.key_type, "key_bits": c.key_bits, "sig_alg": c.sig_alg,
                "sig_alg_aws_ok": c.sig_alg_aws_ok, "cert_id": c.cert_id(), "count": count}
    except CertificateError as exc:
        return {"error": str(exc)}
    except MemoryError:
        return {"error": "out of memory"}
