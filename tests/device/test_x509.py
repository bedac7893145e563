# Device tests for upcert.x509 against fixed vectors made with pyca/cryptography (certdata.py);
# the bulk comparison over many generated certificates is tests/host/test_x509_vs_cryptography.py.
import hashlib
import time
from binascii import b2a_base64, hexlify

from certdata import EC_DER, EC_EXPECT, RSA_DER, RSA_EXPECT
from checks import eq, raises, true
from upcert import chain, der, x509
from upcert.clock import utc_seconds
from upcert.errors import CertificateError


def _check(cert, want):
    for field in (
        "serial",
        "subject_cn",
        "issuer_cn",
        "not_before_tuple",
        "not_after_tuple",
        "key_type",
        "key_bits",
        "sig_alg",
        "cert_id",
    ):
        got = getattr(cert, field)
        eq(got() if callable(got) else got, want[field], field)
    eq(
        hexlify(hashlib.sha256(cert.public_key).digest()).decode(),
        want["public_key_sha256"],
        "public_key",
    )
    true(cert.sig_alg_aws_ok, "sig_alg_aws_ok")


def test_ec_fields():
    c = x509.Certificate(EC_DER)
    _check(c, EC_EXPECT)
    eq(len(c.public_key), 65, "uncompressed point length")
    eq(c.public_key[0], 4, "uncompressed point prefix")
    eq(c.der, EC_DER, "der kept")


def test_rsa_fields():
    c = x509.Certificate(RSA_DER)
    _check(c, RSA_EXPECT)
    eq(len(c.public_key), 256, "modulus without pad byte")


def test_times_use_port_epoch():
    # Port-epoch seconds must map back to the same calendar fields through this port's gmtime.
    for data in (EC_DER, RSA_DER):
        c = x509.Certificate(data)
        eq(tuple(time.gmtime(c.not_after)[:6]), c.not_after_tuple, "gmtime(not_after)")
        eq(tuple(time.gmtime(c.not_before)[:6]), c.not_before_tuple, "gmtime(not_before)")
        eq(c.not_after, utc_seconds(c.not_after_tuple), "utc_seconds")
    if time.gmtime(0)[0] == 1970:  # the unix port: also check against the absolute value
        eq(x509.Certificate(RSA_DER).not_after, RSA_EXPECT["not_after_unix"], "unix seconds")


def test_validity_and_days_left():
    c = x509.Certificate(EC_DER)
    eq(c.validity(c.not_before - 1), "not_yet_valid", "before")
    eq(c.validity(c.not_before), "valid", "first second")
    eq(c.validity(c.not_after), "valid", "last second")
    eq(c.validity(c.not_after + 1), "expired", "after")
    eq(c.days_left(c.not_after - 86400 * 30), 30, "30 days")
    eq(c.days_left(c.not_after + 43200), -0.5, "expired half a day")


def test_cert_id_is_sha256_of_der():
    c = x509.Certificate(RSA_DER)
    eq(c.cert_id(), hexlify(hashlib.sha256(RSA_DER).digest()).decode(), "cert_id")
    eq(len(c.cert_id()), 64, "hex length")


def test_signature():
    c = x509.Certificate(EC_DER)
    true(len(c.signature) > 60 and c.signature[0] == 0x30, "ECDSA-Sig-Value SEQUENCE")
    true(EC_DER.endswith(c.signature), "signatureValue is last")


def test_load_pem_and_der():
    b64 = b2a_base64(RSA_DER).replace(b"\n", b"")
    pem = b"-----BEGIN CERTIFICATE-----\n" + b64 + b"\n-----END CERTIFICATE-----\n"
    eq(x509.load(pem).cert_id(), RSA_EXPECT["cert_id"], "PEM bytes")
    eq(x509.load(pem.decode()).cert_id(), RSA_EXPECT["cert_id"], "PEM str")
    eq(x509.load(EC_DER).cert_id(), EC_EXPECT["cert_id"], "DER")
    eq(x509.load(bytearray(EC_DER)).der, EC_DER, "bytearray")
    eq(
        x509.load(b"Certificate:\n  text dump\n" + pem).cert_id(),
        RSA_EXPECT["cert_id"],
        "text before PEM",
    )
    raises(CertificateError, x509.load, b"", contains="no data")
    raises(
        CertificateError,
        x509.load,
        b"\x02\x01\x00",
        contains="not a certificate: expected SEQUENCE",
    )
    raises(CertificateError, x509.load, "-----BEGIN CERTIFICATE-----\n", contains="block found")


def test_errors_name_the_problem():
    raises(
        CertificateError,
        x509.Certificate,
        b"\x02\x01\x00",
        contains="not a certificate: expected SEQUENCE at byte 0",
    )
    raises(CertificateError, x509.Certificate, EC_DER[:312], contains="truncated at byte")
    raises(
        CertificateError,
        x509.Certificate,
        EC_DER + b"\x00",
        contains="trailing bytes at byte %d" % len(EC_DER),
    )
    raises(CertificateError, x509.Certificate, b"\x30\x00", contains="tbsCertificate")


def _outer_alg_oid_end(data):
    # End offset of the OID inside Certificate.signatureAlgorithm.
    buf, s, e = der.single(data)
    t, ts, te = der.tlv(buf, s)
    t, as_, ae = der.tlv(buf, te)
    t, os_, oe = der.tlv(buf, as_)
    return oe


def test_signature_algorithm_mismatch():
    data = bytearray(EC_DER)
    data[_outer_alg_oid_end(data) - 1] = 0x03  # outer says ecdsa-with-SHA384, tbs says SHA256
    raises(CertificateError, x509.Certificate, data, contains="signature algorithm mismatch")


def test_unknown_signature_algorithm_is_the_oid():
    data = bytearray(EC_DER)
    inner = data.find(b"\x2a\x86\x48\xce\x3d\x04\x03\x02")  # ecdsa-with-SHA256 in tbsCertificate
    data[inner + 7] = 0x01  # -> ecdsa-with-SHA224 (1.2.840.10045.4.3.1)
    data[_outer_alg_oid_end(data) - 1] = 0x01
    c = x509.Certificate(data)
    eq(c.sig_alg, "1.2.840.10045.4.3.1", "dotted OID")
    eq(c.sig_alg_aws_ok, False, "not accepted by AWS")


def test_path_validation_parts():
    # What upcert.chain reads, found by offset: tbsCertificate, algorithm, names, extensions.
    c = x509.Certificate(EC_DER)
    t, s, e = der.tlv(EC_DER, 4)
    eq(bytes(chain.tbs(c)), EC_DER[4:e], "tbsCertificate TLV")
    eq(bytes(chain.sig_alg_der(c)), b"\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02", "ecdsa-with-SHA256")
    issuer, subject = bytes(chain.issuer_der(c)), bytes(chain.subject_der(c))
    true(issuer[0] == 0x30 and b"upcert test CA" in issuer, "issuer Name DER")
    eq(subject, b"\x30\x0f\x31\x0d\x30\x0b\x06\x03\x55\x04\x03\x0c\x04dev1", "subject Name DER")
    eq([(bytes(o), k, bytes(v)) for o, k, v in c.extensions()],
       [(b"\x55\x1d\x13", True, b"\x30\x00")], "basicConstraints, critical, cA FALSE")
    eq(c.key_exp, None, "no exponent for EC")
    eq(x509.Certificate(RSA_DER).key_exp, 65537, "RSA public exponent")


def test_memoryview_is_not_copied():
    mv = memoryview(bytearray(EC_DER))
    c = x509.Certificate(mv)
    true(c.der is mv, "der is the caller's view")
    true(isinstance(c.signature, memoryview), "signature is a view too")
    eq(bytes(c.signature), x509.Certificate(EC_DER).signature, "same signature")
    eq(c.cert_id(), EC_EXPECT["cert_id"], "cert_id over a view")
    true(isinstance(x509.Certificate(EC_DER).signature, bytes), "bytes in, bytes out")


def test_bad_extension_is_lenient_until_read():
    data = bytearray(EC_DER)
    at = bytes(data).find(b"\x01\x01\xff\x04\x02\x30\x00")
    data[at + 3] = 0x05  # extnValue is no OCTET STRING
    c = x509.Certificate(bytes(data))
    eq((c.ski, c.aki), (None, None), "key ids read leniently")
    raises(CertificateError, list, c.extensions(), contains="extnValue")
