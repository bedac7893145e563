"""The local development CA: the stand-in's root, the broker's server certificate, the host's
admin identity, and device certificates issued from CSRs or host-made keys."""

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from upcert.pki.certs import (
    _DER,
    _SPKI,
    _THING_RE,
    UTC,
    CertError,
    generate_key,
    load_certificate,
    load_private_key,
    write_certificate,
    write_private_key,
)
from upcert.validate import private_dir

_CA_DAYS = 3653  # 10 years
_SERVER_DAYS = 825  # CA/Browser Forum limit that Apple and others enforce on server certs
_BACKDATE = datetime.timedelta(minutes=5)  # tolerate small clock skew between host and device
BACKDATE = _BACKDATE  # notBefore of what this CA issues lies this far in the past
ADMIN_CN = "upcert-admin"


def _serial():
    """Random positive serial that fits 16 DER bytes (RFC 5280 §4.1.2.2: <= 20 octets)."""
    return (int.from_bytes(os.urandom(16), "big") >> 1) | 1


def _key_usage(**on):
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: on.get(n, False) for n in names})


class LocalCa:
    """A development CA in a directory: ca.pem/ca.key, server.pem/.key (broker), admin.pem/.key.

    RSA mirrors Amazon Root CA 1 (RSA-2048, sha256WithRSA), EC mirrors Amazon Root CA 3 (P-256,
    ecdsa-with-SHA256). Build it with LocalCa.init or LocalCa.load.
    """

    def __init__(self, directory, certificate, key):
        self.directory = Path(directory)
        self.certificate = certificate
        self._key = key
        self.ca_pem = self.directory / "ca.pem"
        self.ca_key = self.directory / "ca.key"
        self.server_pem = self.directory / "server.pem"
        self.server_key = self.directory / "server.key"
        self.admin_pem = self.directory / "admin.pem"
        self.admin_key = self.directory / "admin.key"

    @property
    def key_type(self):
        """"rsa" or "ec", the CA's own key type (also used for the server and admin keys)."""
        return "rsa" if isinstance(self._key, rsa.RSAPrivateKey) else "ec"

    @classmethod
    def init(cls, directory, key_type="rsa", server_names=("localhost",), force=False):
        """Create a new CA with server and admin identities in directory."""
        directory = Path(directory)
        if not force and ((directory / "ca.pem").exists() or (directory / "ca.key").exists()):
            raise CertError(
                f"{directory} already holds a local CA: re-initialising makes a new CA key, so "
                "every device certificate it issued stops working; use force (`upcert ca init "
                "--force`) only if that is what you want"
            )
        if isinstance(server_names, str) or not server_names:
            raise CertError("server_names must be a non-empty list of host names, e.g. ['localhost']")
        if key_type not in ("rsa", "ec"):
            raise CertError(f"unknown CA key type {key_type!r}: use 'rsa' or 'ec'")
        private_dir(directory)  # 0700 where made here, parents ($UPCERT_HOME) too
        key = generate_key(key_type)
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "upcert"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"upcert local CA {os.urandom(4).hex()}"),
        ])
        now = datetime.datetime.now(UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(_serial())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        ca = cls(directory, cert, key)
        write_private_key(ca.ca_key, key)
        write_certificate(ca.ca_pem, cert)
        server, server_key = ca.issue_server(list(server_names) + ["127.0.0.1"])
        write_private_key(ca.server_key, server_key)
        write_certificate(ca.server_pem, server)
        admin_key = generate_key(key_type)
        write_private_key(ca.admin_key, admin_key)
        write_certificate(ca.admin_pem, ca._issue(ADMIN_CN, admin_key.public_key(), _SERVER_DAYS))
        return ca

    @classmethod
    def load(cls, directory):
        """The CA made earlier by init in directory."""
        directory = Path(directory)
        if not (directory / "ca.pem").exists() or not (directory / "ca.key").exists():
            raise CertError(f"no local CA in {directory}: run `upcert ca init`")
        cert = load_certificate(directory / "ca.pem")
        key = load_private_key(directory / "ca.key")
        if key.public_key().public_bytes(_DER, _SPKI) != cert.public_key().public_bytes(_DER, _SPKI):
            raise CertError(f"{directory}: ca.key does not match ca.pem: run `upcert ca init --force`")
        return cls(directory, cert, key)

    def issue_device(self, thing, public_key, days=365, not_before=None, not_after=None):
        """A client certificate for a thing (CN = thing name), signed by this CA."""
        if not isinstance(thing, str) or not _THING_RE.fullmatch(thing):
            raise CertError(
                f"thing name {thing!r} is not valid: use 1-128 letters, digits, ':', '_' or '-' "
                "(AWS IoT thing name rules; it becomes the certificate CN and topic prefix)"
            )
        if thing == ADMIN_CN:
            raise CertError(f"thing name {ADMIN_CN!r} is reserved for the host's admin identity")
        return self._issue(thing, public_key, days, not_before, not_after)

    def issue_server(self, names, key=None):
        """(certificate, key) for a TLS server: DNS names and IP addresses from names."""
        key = key or generate_key(self.key_type)
        alt = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        cert = self._issue(
            names[0], key.public_key(), _SERVER_DAYS, eku=ExtendedKeyUsageOID.SERVER_AUTH,
            extra=[x509.SubjectAlternativeName(alt)],
            key_encipherment=isinstance(key, rsa.RSAPrivateKey),  # RSA key exchange suites
        )
        return cert, key

    def _issue(self, cn, public_key, days, not_before=None, not_after=None,
               eku=ExtendedKeyUsageOID.CLIENT_AUTH, extra=(), key_encipherment=False):
        now = datetime.datetime.now(UTC)
        not_before = not_before or now - _BACKDATE
        not_after = not_after or not_before + _BACKDATE + datetime.timedelta(days=days)
        if not_after <= not_before:
            raise CertError(f"not_after ({not_after}) must be later than not_before ({not_before})")
        ca_pub = self._key.public_key()
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.certificate.subject).public_key(public_key)
            .serial_number(_serial()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True, key_encipherment=key_encipherment),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_pub), critical=False)
        )
        for ext in extra:
            b = b.add_extension(ext, critical=False)
        return b.sign(self._key, hashes.SHA256())
