"""Certificates and keys for devices: loading (PEM/DER), writing (keys 0600), checks that mirror
what AWS IoT Core accepts, and the local development CA that stands in for AWS's issuer.
"""

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from upcert.errors import UpcertError
from upcert.pki.algorithms import AWS_SIGNATURE_ALGORITHMS
from upcert.validate import write_private

UTC = datetime.timezone.utc
_DER = serialization.Encoding.DER
_PEM = serialization.Encoding.PEM
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo

# Signature algorithms AWS IoT accepts for registered certificates: AWS_SIGNATURE_ALGORITHMS
# (pki/algorithms.py, AWS IoT Developer Guide "X.509 client certificates"). RSASSA-PSS is
# accepted with SHA-256/384/512 (AWS: SHA<n>WITHRSAANDMGF1).
_PSS_HASHES = ("sha256", "sha384", "sha512")
# AWS IoT Device Defender audit check DEVICE_CERTIFICATE_EXPIRING_CHECK: 30 days by default
# (AWS IoT Device Defender Guide, "Device certificate expiring").
EXPIRY_WARNING_DAYS = 30
# AWS IoT thing names: 1-128 of [a-zA-Z0-9:_-] (CreateThing API). The name becomes the CN and
# the MQTT topic prefix, so "/", "+", "#" must never get in (mosquitto ACL %u substitution).
_THING_RE = re.compile(r"[A-Za-z0-9:_-]{1,128}")


class CertError(UpcertError):
    """A certificate or key that cannot be used, with what to do about it."""


def signature_algorithm_name(cert):
    """AWS's name for the certificate's signature algorithm, or its dotted OID if AWS lacks it."""
    oid = cert.signature_algorithm_oid
    return AWS_SIGNATURE_ALGORITHMS.get(oid, oid.dotted_string)


def cert_id(cert):
    """AWS certificateId: lowercase hex SHA-256 of the certificate DER (its SHA-256 fingerprint)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def cert_to_der(cert):
    """The certificate as DER bytes (what the device stores)."""
    return cert.public_bytes(_DER)


def key_to_der(key):
    """The private key as unencrypted PKCS#8 DER (what the device's tls module loads, §2)."""
    return key.private_bytes(_DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _read(path_or_bytes):
    """(data, label for messages) from a path or bytes."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), "<data>"
    path = Path(path_or_bytes)
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise CertError(f"{path}: no such file") from None
    except OSError as e:
        raise CertError(f"{path}: cannot read ({e.strerror})") from None


def _split_der(data):
    """Concatenated DER SEQUENCEs (like the device's roots.der) -> list of byte strings."""
    parts, i = [], 0
    while i < len(data):
        if data[i] != 0x30 or i + 2 > len(data):
            return None
        n, i2 = data[i + 1], i + 2
        if n & 0x80:
            width = n & 0x7F
            if not 0 < width <= 4 or i2 + width > len(data):
                return None
            n, i2 = int.from_bytes(data[i2 : i2 + width], "big"), i2 + width
        if i2 + n > len(data):
            return None
        parts.append(data[i : i2 + n])
        i = i2 + n
    return parts


def load_certificates(path_or_bytes):
    """All certificates in a PEM bundle, a DER file or concatenated DER, in file order."""
    data, label = _read(path_or_bytes)
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)
        parts = _split_der(data)
        if parts:
            return [x509.load_der_x509_certificate(p) for p in parts]
    except ValueError:
        pass
    if b"PRIVATE KEY-----" in data:
        raise CertError(f"{label}: holds a private key, not a certificate: pass the certificate")
    raise CertError(f"{label}: not a PEM or DER certificate")


def load_certificate(path_or_bytes):
    """One certificate from PEM or DER; for a bundle (leaf first, then chain) the first one."""
    return load_certificates(path_or_bytes)[0]


def load_private_key(path_or_bytes):
    """A private key from PEM or DER: PKCS#1 (RSA), SEC1 (EC) or PKCS#8, unencrypted."""
    data, label = _read(path_or_bytes)
    pem = b"-----BEGIN" in data
    if pem and (b"ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data):
        raise _encrypted(label)
    try:
        if pem:
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_der_private_key(data, password=None)
    except TypeError:  # "private key is encrypted" (DER PKCS#8 EncryptedPrivateKeyInfo)
        raise _encrypted(label) from None
    except (ValueError, UnsupportedAlgorithm):
        pass  # never echo the parser's message: it could quote key bytes
    if b"-----BEGIN CERTIFICATE" in data:
        raise CertError(f"{label}: holds a certificate, not a private key: pass the key file")
    raise CertError(f"{label}: not a PEM or DER private key (PKCS#1, SEC1 or PKCS#8)")


def _encrypted(label):
    return CertError(
        f"{label}: the private key is encrypted: decrypt it first "
        f"(`openssl pkey -in {label} -out key-plain.pem`) and keep the result private"
    )


def write_private_key(path, key):
    """Write the key as PEM PKCS#8; the file is 0600 from creation, also when it existed."""
    pem = key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(path, pem)  # an existing file gets 0600 too (O_CREAT keeps its old mode)


def write_certificate(path, cert):
    """Write the certificate as PEM, 0600 like everything under $UPCERT_HOME (public, but the
    state folders are the owner's alone)."""
    write_private(path, cert.public_bytes(_PEM))


def generate_key(kind="ec"):
    """A new private key: "ec" = P-256 (AWS and the device's P-256 code), "rsa" = RSA-2048."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise CertError(f"unknown key type {kind!r}: use 'ec' (P-256) or 'rsa' (RSA-2048)")


def common_name(name):
    """The CN of an x509.Name, or its RFC 4514 string when it has no CN."""
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return cns[0].value if cns else name.rfc4514_string()


@dataclass
class CheckReport:
    """What check_device_credentials found; times are aware UTC datetimes."""

    cert_id: str
    subject_cn: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    signature_algorithm: str
    issuer_check: str  # "verified" or "cannot tell: <why>"
    warnings: list = field(default_factory=list)


def check_device_credentials(cert, key, root=None, now=None):
    """Check a device certificate and key the way AWS IoT would; raise CertError on the first
    problem (key mismatch, validity, signature algorithm, issuer), else return a CheckReport."""
    if not isinstance(cert, x509.Certificate):
        cert = load_certificate(cert)
    if root is not None and not isinstance(root, x509.Certificate):
        root = load_certificate(root)
    if not hasattr(key, "private_bytes"):
        key = load_private_key(key)
    now = now or datetime.datetime.now(UTC)
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    cn = common_name(cert.subject)
    if key.public_key().public_bytes(_DER, _SPKI) != cert.public_key().public_bytes(_DER, _SPKI):
        raise CertError(
            f"the private key does not belong to certificate {cn!r} ({cert_id(cert)[:12]}): "
            "pass the key the certificate was issued for, or issue a certificate for this key"
        )
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now > na:
        raise CertError(f"certificate {cn!r} expired on {na:%Y-%m-%d %H:%M} UTC: issue a new one")
    if now < nb:
        raise CertError(
            f"certificate {cn!r} is not valid until {nb:%Y-%m-%d %H:%M} UTC (now "
            f"{now:%Y-%m-%d %H:%M} UTC): check this computer's clock, or wait until then"
        )
    alg = signature_algorithm_name(cert)
    pss_hash = cert.signature_hash_algorithm if alg == "RSASSAPSS" else None
    if alg not in AWS_SIGNATURE_ALGORITHMS.values() or (
        pss_hash is not None and pss_hash.name not in _PSS_HASHES
    ):
        raise CertError(
            f"certificate {cn!r} is signed with {_alg_label(cert)}, which AWS IoT does not "
            f"accept (it takes {', '.join(AWS_SIGNATURE_ALGORITHMS.values())}): re-issue it "
            "signed with SHA-256, e.g. sha256WithRSA or ecdsa-with-SHA256"
        )
    report = CheckReport(cert_id(cert), cn, nb, na, alg, _issuer_check(cert, root))
    days_left = round((na - now) / datetime.timedelta(days=1))
    if na - now < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        report.warnings.append(
            f"certificate expires in {days_left} days ({na:%Y-%m-%d} UTC): rotate it soon "
            f"(AWS Device Defender flags certificates within {EXPIRY_WARNING_DAYS} days)"
        )
    return report


def _alg_label(cert):
    oid = cert.signature_algorithm_oid
    return f"{oid._name} ({oid.dotted_string})" if getattr(oid, "_name", None) else oid.dotted_string


def _issuer_check(cert, root):
    if root is None:
        return "cannot tell: no root certificate given"
    root_cn = common_name(root.subject)
    if root.subject != cert.issuer:
        return (
            f"cannot tell: the certificate's issuer {common_name(cert.issuer)!r} is not the "
            f"root {root_cn!r} (an intermediate CA between them, or a root that signs the "
            "server rather than devices, as Amazon Root CA 1 does for AWS-issued certificates)"
        )
    try:
        cert.verify_directly_issued_by(root)
    except InvalidSignature:
        why = "its signature does not verify with that root's key (same name, other key)"
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        why = f"its signature cannot be checked with that root's key ({e})"
    else:
        return "verified"
    raise CertError(
        f"certificate was not issued by {root_cn}: {why}: use the root of the CA that issued "
        "it, or issue a new certificate from this CA"
    )
