"""Tests for upcert.pki.certs with real keys: loading, writing 0600, the device credential checks,
and the local CA, cross-checked with the `openssl` command line (an independent implementation).
"""

import datetime
import hashlib
import os
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, padding
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from upcert.pki.ca import LocalCa
from upcert.pki.certs import (
    AWS_SIGNATURE_ALGORITHMS,
    CertError,
    cert_id,
    cert_to_der,
    check_device_credentials,
    generate_key,
    key_to_der,
    load_certificate,
    load_certificates,
    load_private_key,
    signature_algorithm_name,
    write_certificate,
    write_private_key,
)

from tests.tools import require

UTC = datetime.timezone.utc
NOW = datetime.datetime.now(UTC)
DAY = datetime.timedelta(days=1)
PEM, DER = serialization.Encoding.PEM, serialization.Encoding.DER
NOENC = serialization.NoEncryption()


@pytest.fixture(scope="module", params=["rsa", "ec"])
def ca(request, tmp_path_factory):
    return LocalCa.init(tmp_path_factory.mktemp(f"ca-{request.param}"), key_type=request.param)


@pytest.fixture(scope="module")
def rsa_ca(tmp_path_factory):
    return LocalCa.init(tmp_path_factory.mktemp("ca-rsa-only"), key_type="rsa")


def openssl(*args, input=None):
    run = subprocess.run([require("openssl"), *map(str, args)], input=input,
                         capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr.decode()
    return run.stdout


def self_signed(key, name, sign_key=None, **sign):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY).not_valid_after(NOW + 400 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(sign_key or key, **sign)
    )


def issued(issuer_cert, issuer_key, key, cn="dev1", **sign):
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY).not_valid_after(NOW + 400 * DAY)
        .sign(issuer_key, **sign)
    )


# --- check_device_credentials ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_good_credentials_are_verified(ca, kind):
    key = generate_key(kind)
    now = datetime.datetime.now(datetime.timezone.utc)  # not NOW: taken at collection time
    cert = ca.issue_device("dev-1", key.public_key())
    report = check_device_credentials(cert, key, root=ca.certificate)
    assert report.issuer_check == "verified"
    assert report.subject_cn == "dev-1"
    assert report.cert_id == hashlib.sha256(cert_to_der(cert)).hexdigest()
    assert report.signature_algorithm == (
        "SHA256WITHRSA" if ca.key_type == "rsa" else "ECDSA-WITH-SHA256")
    assert report.not_before.tzinfo is not None and report.not_after.tzinfo is not None
    assert report.not_before <= now < report.not_after
    assert report.warnings == []


def test_key_of_another_certificate_is_refused(ca):
    cert = ca.issue_device("dev1", generate_key().public_key())
    with pytest.raises(CertError, match="does not belong to certificate 'dev1'"):
        check_device_credentials(cert, generate_key(), root=ca.certificate)


def test_expired_certificate_is_refused(ca):
    key = generate_key()
    cert = ca.issue_device("dev1", key.public_key(), not_before=NOW - 30 * DAY,
                           not_after=NOW - DAY)
    with pytest.raises(CertError, match="expired on .*issue a new one"):
        check_device_credentials(cert, key, root=ca.certificate)


def test_not_yet_valid_certificate_is_refused(ca):
    key = generate_key()
    cert = ca.issue_device("dev1", key.public_key(), not_before=NOW + DAY)
    with pytest.raises(CertError, match="not valid until .*clock"):
        check_device_credentials(cert, key, root=ca.certificate)
    # ... and accepted once that time has come
    assert check_device_credentials(cert, key, ca.certificate, now=NOW + 2 * DAY).warnings == []


def test_expiry_within_30_days_is_a_warning(ca):
    key = generate_key()
    cert = ca.issue_device("dev1", key.public_key(), days=20)
    report = check_device_credentials(cert, key, root=ca.certificate)
    assert report.issuer_check == "verified"
    assert len(report.warnings) == 1 and "expires in 20 days" in report.warnings[0]
    late = ca.issue_device("dev1", key.public_key(), days=31)
    assert check_device_credentials(late, key, root=ca.certificate).warnings == []


def test_sha1_signed_certificate_is_refused(tmp_path, ca):
    # cryptography refuses to sign with SHA-1, so openssl signs it with the CA's key.
    key = generate_key("rsa")
    write_private_key(tmp_path / "dev.key", key)
    csr = openssl("req", "-new", "-key", tmp_path / "dev.key", "-subj", "/CN=dev1")
    (tmp_path / "dev.csr").write_bytes(csr)
    pem = openssl("x509", "-req", "-sha1", "-in", tmp_path / "dev.csr", "-CA", ca.ca_pem,
                  "-CAkey", ca.ca_key, "-days", "30", "-set_serial", "7")
    cert = load_certificate(pem)
    assert cert.signature_hash_algorithm.name == "sha1"
    with pytest.raises(CertError, match=r"(?i)signed with [^,]*sha1.*does not accept.*SHA-256"):
        check_device_credentials(cert, key, root=ca.certificate)


def test_wrong_root_with_the_same_name_is_refused(ca):
    key = generate_key()
    cert = ca.issue_device("dev1", key.public_key())
    impostor_key = generate_key(ca.key_type)
    impostor = (
        x509.CertificateBuilder().subject_name(ca.certificate.subject)
        .issuer_name(ca.certificate.subject).public_key(impostor_key.public_key())
        .serial_number(1).not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
        .sign(impostor_key, hashes.SHA256())
    )
    with pytest.raises(CertError, match="not issued by upcert local CA"):
        check_device_credentials(cert, key, root=impostor)


def test_issuer_behind_an_intermediate_cannot_be_told(ca):
    ca_key = load_private_key(ca.ca_key)
    inter_key = generate_key("ec")
    inter = issued(ca.certificate, ca_key, inter_key, cn="upcert intermediate",
                   algorithm=hashes.SHA256())
    key = generate_key()
    cert = issued(inter, inter_key, key, algorithm=hashes.SHA256())
    report = check_device_credentials(cert, key, root=ca.certificate)
    assert report.issuer_check.startswith("cannot tell: ")
    assert "upcert intermediate" in report.issuer_check
    assert check_device_credentials(cert, key, root=inter).issuer_check == "verified"
    assert check_device_credentials(cert, key).issuer_check.startswith("cannot tell: no root")


def test_rsa_pss_and_dsa_signatures_are_verified():
    root_key = generate_key("rsa")
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    root = self_signed(root_key, "pss root", algorithm=hashes.SHA256(), rsa_padding=pss)
    key = generate_key()
    cert = issued(root, root_key, key, algorithm=hashes.SHA256(), rsa_padding=pss)
    report = check_device_credentials(cert, key, root=root)
    assert (report.signature_algorithm, report.issuer_check) == ("RSASSAPSS", "verified")

    dsa_key = dsa.generate_private_key(2048)
    root = self_signed(dsa_key, "dsa root", algorithm=hashes.SHA256())
    cert = issued(root, dsa_key, key, algorithm=hashes.SHA256())
    report = check_device_credentials(cert, key, root=root)
    assert (report.signature_algorithm, report.issuer_check) == ("DSA_WITH_SHA256", "verified")
    other = self_signed(dsa.generate_private_key(2048), "dsa root", algorithm=hashes.SHA256())
    with pytest.raises(CertError, match="not issued by dsa root"):
        check_device_credentials(cert, key, root=other)


def test_aws_algorithm_names(ca):
    # The one table (firmware/upcert/sigalgs.py SIG_ALGS, read by pki/algorithms.py): its OIDs are
    # cryptography's own constants for the algorithms AWS names (RFC 4055, RFC 5758 §3.2).
    sig = SignatureAlgorithmOID
    assert AWS_SIGNATURE_ALGORITHMS == {
        sig.RSA_WITH_SHA256: "SHA256WITHRSA", sig.RSA_WITH_SHA384: "SHA384WITHRSA",
        sig.RSA_WITH_SHA512: "SHA512WITHRSA", sig.RSASSA_PSS: "RSASSAPSS",
        sig.DSA_WITH_SHA256: "DSA_WITH_SHA256", sig.ECDSA_WITH_SHA256: "ECDSA-WITH-SHA256",
        sig.ECDSA_WITH_SHA384: "ECDSA-WITH-SHA384", sig.ECDSA_WITH_SHA512: "ECDSA-WITH-SHA512"}
    assert "ECDSA-WITH-SHA384" in AWS_SIGNATURE_ALGORITHMS.values()
    key = generate_key("ec")
    cert = self_signed(key, "x", algorithm=hashes.SHA384())
    assert signature_algorithm_name(cert) == "ECDSA-WITH-SHA384"
    cert = self_signed(key, "x", algorithm=hashes.SHA224())
    assert signature_algorithm_name(cert) == "1.2.840.10045.4.3.1"  # not AWS's: dotted OID


def test_cert_id_matches_openssl_fingerprint(ca, tmp_path):
    cert = ca.issue_device("dev1", generate_key().public_key())
    write_certificate(tmp_path / "c.pem", cert)
    out = openssl("x509", "-in", tmp_path / "c.pem", "-noout", "-fingerprint", "-sha256")
    assert cert_id(cert) == out.decode().split("=", 1)[1].strip().replace(":", "").lower()


# --- loading and writing --------------------------------------------------------------------

RSA_FORMATS = [(PEM, "TraditionalOpenSSL"), (PEM, "PKCS8"), (DER, "TraditionalOpenSSL"),
               (DER, "PKCS8")]


@pytest.mark.parametrize("kind", ["rsa", "ec"])
@pytest.mark.parametrize("encoding,fmt", RSA_FORMATS)  # TraditionalOpenSSL: PKCS#1 / SEC1
def test_private_key_formats_load(tmp_path, kind, encoding, fmt):
    key = generate_key(kind)
    data = key.private_bytes(encoding, getattr(serialization.PrivateFormat, fmt), NOENC)
    (tmp_path / "k").write_bytes(data)
    for source in (data, tmp_path / "k", str(tmp_path / "k")):
        assert key_to_der(load_private_key(source)) == key_to_der(key)


@pytest.mark.parametrize("args", [["genrsa", "-traditional", "2048"],
                                  ["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
                                  ["genpkey", "-algorithm", "EC", "-pkeyopt",
                                   "ec_paramgen_curve:P-256"]])
def test_keys_made_by_openssl_load(args):
    pem = openssl(*args)
    key = load_private_key(pem)
    spki = key.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert spki == openssl("pkey", "-pubout", "-outform", "DER", input=pem)


def test_encrypted_keys_are_refused_without_leaking(tmp_path):
    key = generate_key("rsa")
    enc = serialization.BestAvailableEncryption(b"secret")
    variants = {
        "pkcs8.pem": key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, enc),
        "legacy.pem": key.private_bytes(PEM, serialization.PrivateFormat.TraditionalOpenSSL, enc),
        "pkcs8.der": key.private_bytes(DER, serialization.PrivateFormat.PKCS8, enc),
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CertError, match="encrypted: decrypt it first .*openssl pkey") as e:
            load_private_key(tmp_path / name)
        assert name in str(e.value)
        assert "BEGIN" not in str(e.value) and "secret" not in str(e.value)


def test_bad_key_inputs_have_clear_errors(tmp_path, rsa_ca):
    with pytest.raises(CertError, match="no such file"):
        load_private_key(tmp_path / "missing.key")
    with pytest.raises(CertError, match="holds a certificate, not a private key"):
        load_private_key(rsa_ca.ca_pem)
    pem = generate_key().private_bytes(PEM, serialization.PrivateFormat.PKCS8, NOENC)
    broken = pem[:60] + b"AAAA" + pem[64:]
    with pytest.raises(CertError, match="not a PEM or DER private key") as e:
        load_private_key(broken)
    assert pem[30:60].decode() not in str(e.value)


def test_certificates_load_from_pem_der_and_bundles(tmp_path, rsa_ca):
    cert = rsa_ca.issue_device("dev1", generate_key().public_key())
    pem, der = cert.public_bytes(PEM), cert_to_der(cert)
    ca_pem, ca_der = rsa_ca.certificate.public_bytes(PEM), cert_to_der(rsa_ca.certificate)
    assert load_certificate(pem) == cert == load_certificate(der)
    assert load_certificates(pem + ca_pem) == [cert, rsa_ca.certificate]
    assert load_certificates(der + ca_der) == [cert, rsa_ca.certificate]  # like roots.der
    assert load_certificate(pem + ca_pem) == cert  # leaf first
    (tmp_path / "junk.pem").write_bytes(b"hello\n")
    with pytest.raises(CertError, match=r"junk.pem: not a PEM or DER certificate"):
        load_certificate(tmp_path / "junk.pem")
    with pytest.raises(CertError, match="not a PEM or DER certificate"):
        load_certificate(der[:-10])
    with pytest.raises(CertError, match="holds a private key, not a certificate"):
        load_certificate(rsa_ca.ca_key)


def test_written_keys_are_0600_even_over_a_0644_file(tmp_path):
    old_umask = os.umask(0)  # a permissive umask must not widen the mode
    try:
        key = generate_key()
        write_private_key(tmp_path / "new.key", key)
        assert stat.S_IMODE(os.stat(tmp_path / "new.key").st_mode) == 0o600
        existing = tmp_path / "old.key"
        existing.write_text("x" * 5000)
        os.chmod(existing, 0o644)
        write_private_key(existing, key)
        assert stat.S_IMODE(os.stat(existing).st_mode) == 0o600
        assert key_to_der(load_private_key(existing)) == key_to_der(key)  # truncated, not mixed
    finally:
        os.umask(old_umask)


def test_key_der_is_pkcs8_for_the_device():
    key = generate_key("ec")
    der = key_to_der(key)
    text = openssl("asn1parse", "-inform", "DER", input=der).decode()
    assert "id-ecPublicKey" in text and "prime256v1" in text  # PKCS#8 AlgorithmIdentifier
    assert "INTEGER           :00" in text.splitlines()[1]  # PKCS#8 version 0 (SEC1 has 1)
    # `openssl pkcs8 -nocrypt` reads only an unencrypted PKCS#8 PrivateKeyInfo
    assert b"BEGIN PRIVATE KEY" in openssl("pkcs8", "-inform", "DER", "-nocrypt", input=der)


def test_generate_key_kinds():
    assert generate_key("rsa").key_size == 2048
    assert generate_key("ec").curve.name == "secp256r1"
    with pytest.raises(CertError, match="use 'ec'"):
        generate_key("ed25519")


# --- local CA -------------------------------------------------------------------------------


def test_ca_files_and_modes(ca):
    for name in ("ca", "server", "admin"):
        assert (ca.directory / f"{name}.pem").exists()
        assert stat.S_IMODE(os.stat(ca.directory / f"{name}.key").st_mode) == 0o600
    c = ca.certificate
    bc = c.extensions.get_extension_for_class(x509.BasicConstraints)
    ku = c.extensions.get_extension_for_class(x509.KeyUsage)
    assert bc.critical and bc.value.ca
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert 3650 <= (c.not_valid_after_utc - c.not_valid_before_utc).days <= 3655
    want = {"rsa": SignatureAlgorithmOID.RSA_WITH_SHA256,
            "ec": SignatureAlgorithmOID.ECDSA_WITH_SHA256}[ca.key_type]
    assert c.signature_algorithm_oid == want
    loaded = LocalCa.load(ca.directory)
    assert loaded.certificate == c and loaded.key_type == ca.key_type


def test_ca_init_twice_is_refused(tmp_path):
    first = LocalCa.init(tmp_path, key_type="ec")
    with pytest.raises(CertError, match="already holds a local CA.*stops working.*force"):
        LocalCa.init(tmp_path, key_type="ec")
    assert LocalCa.load(tmp_path).certificate == first.certificate  # untouched
    second = LocalCa.init(tmp_path, key_type="ec", force=True)
    assert second.certificate.public_key() != first.certificate.public_key()
    assert LocalCa.load(tmp_path).certificate == second.certificate


def test_missing_ca_is_explained(tmp_path):
    with pytest.raises(CertError, match=r"no local CA in .*: run `upcert ca init`"):
        LocalCa.load(tmp_path / "nothing")


def test_issued_certificates_pass_openssl_verify(ca, tmp_path):
    key = generate_key()
    device = ca.issue_device("dev1", key.public_key())
    write_certificate(tmp_path / "dev.pem", device)
    check = ["verify", "-CAfile", ca.ca_pem, "-x509_strict"]
    assert b"OK" in openssl(*check, "-purpose", "sslclient", tmp_path / "dev.pem")
    assert b"OK" in openssl(*check, "-purpose", "sslclient", ca.admin_pem)
    assert b"OK" in openssl(*check, "-purpose", "sslserver", "-verify_hostname", "localhost",
                            ca.server_pem)
    assert b"OK" in openssl(*check, "-verify_ip", "127.0.0.1", ca.server_pem)
    other, _ = ca.issue_server(["broker.example", "10.0.0.7"])
    write_certificate(tmp_path / "other.pem", other)
    assert b"OK" in openssl(*check, "-verify_hostname", "broker.example", tmp_path / "other.pem")
    # negative control: openssl must notice a certificate from another CA
    stranger = LocalCa.init(tmp_path / "stranger", key_type=ca.key_type)
    run = subprocess.run([require("openssl"), "verify", "-CAfile", str(stranger.ca_pem),
                          str(tmp_path / "dev.pem")], capture_output=True)
    assert run.returncode != 0


def test_device_certificate_contents(ca):
    key = generate_key()
    serials = set()
    for _ in range(5):
        cert = ca.issue_device("dev1", key.public_key(), days=10)
        serials.add(cert.serial_number)
        assert 0 < cert.serial_number < 2**127
    assert len(serials) == 5
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "dev1" and cert.issuer == ca.certificate.subject
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert 10 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 11


@pytest.mark.parametrize("bad", ["", "a/b", "dev+1", "dev#", "x" * 129, "dév", "upcert-admin"])
def test_bad_thing_names_are_refused(rsa_ca, bad):
    with pytest.raises(CertError, match="thing name"):
        rsa_ca.issue_device(bad, generate_key().public_key())
