# Device tests for upcert.der: TLV framing, primitive decoders, and robustness against malformed
# input (every failure must be a CertificateError carrying a byte offset).
from certdata import EC_DER, RSA_DER
from checks import eq, raises, true
from upcert import der
from upcert.errors import CertificateError


def test_short_and_long_lengths():
    eq(der.tlv(b"\x30\x03\x02\x01\x05"), (0x30, 2, 5), "short form")
    eq(der.tlv(b"\x04\x81\x80" + b"\0" * 128), (0x04, 3, 131), "0x81 form")
    eq(der.tlv(b"\x04\x82\x01\x00" + b"\0" * 256), (0x04, 4, 260), "0x82 form")
    eq(der.tlv(b"\xff\x30\x00\xff", 1, 3), (0x30, 3, 3), "offset and end")


def test_malformed_headers():
    cases = (
        (b"", "truncated"),
        (b"\x30", "truncated at byte 0"),
        (b"\x30\x05\x01", "truncated at byte 2"),
        (b"\x30\x80\x00\x00", "indefinite length at byte 1"),
        (b"\x30\x85\x00\x00\x00\x00\x01", "length too long at byte 1"),
        (b"\x30\x84\xff\xff\xff\xff\x00", "truncated at byte 6"),
        (b"\x30\x82\x01", "truncated at byte 2"),
        (b"\x1f\x81\x01\x00", "unsupported tag"),
    )
    for data, msg in cases:
        raises(CertificateError, der.tlv, data, contains=msg)


def test_value_bounded_by_end():
    # The enclosing element's end bounds the child, not the buffer's end.
    raises(
        CertificateError, der.tlv, b"\x30\x04\x04\x05abcdefg", 2, 6, contains="truncated at byte 4"
    )


def test_expect_and_single():
    raises(
        CertificateError,
        der.expect,
        b"\x02\x01\x00",
        0,
        3,
        der.SEQUENCE,
        "not a certificate",
        contains="not a certificate: expected SEQUENCE at byte 0",
    )
    raises(CertificateError, der.single, b"\x30\x00\x00", contains="trailing bytes at byte 2")
    buf, s, e = der.single(b"\x30\x01\x00")
    eq((s, e), (2, 3), "single")


def test_children():
    data = b"\x30\x06\x02\x01\x01\x02\x01\x02"
    eq([t for t, s, e in der.children(memoryview(data), 2, 8)], [2, 2], "children")
    raises(
        CertificateError, lambda: list(der.children(memoryview(data), 2, 7)), contains="truncated"
    )


def test_oid():
    eq(
        der.read_oid(b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b", 0, 9),
        "1.2.840.113549.1.1.11",
        "rsa oid",
    )
    eq(der.read_oid(b"\x55\x04\x03", 0, 3), "2.5.4.3", "cn oid")
    eq(der.read_oid(b"\x88\x37", 0, 2), "2.999", "arc over 80")
    eq(der.read_oid(b"\x00", 0, 1), "0.0", "zero")
    raises(CertificateError, der.read_oid, b"", 0, 0, contains="bad OID")
    raises(CertificateError, der.read_oid, b"\x2a\x86", 0, 2, contains="unterminated")
    raises(CertificateError, der.read_oid, b"\x2a\x80\x01", 0, 3, contains="non-minimal")


def test_integers_and_bits():
    eq(der.read_uint_bytes(b"\x00\x80", 0, 2), b"\x80", "pad stripped")
    eq(der.read_uint_bytes(b"\x00", 0, 1), b"\x00", "zero kept")
    raises(CertificateError, der.read_uint_bytes, b"", 0, 0, contains="bad INTEGER")
    eq(der.read_bits(b"\x00\x04\x01", 0, 3), b"\x04\x01", "bits")
    raises(CertificateError, der.read_bits, b"\x03\x04", 0, 2, contains="unused bits")
    raises(CertificateError, der.read_bits, b"", 0, 0, contains="unused bits")


def test_times():
    u, g = der.UTC_TIME, der.GENERALIZED_TIME
    eq(der.read_time(b"500101000000Z", u, 0, 13), (1950, 1, 1, 0, 0, 0), "UTCTime 50 -> 1950")
    eq(der.read_time(b"491231235959Z", u, 0, 13), (2049, 12, 31, 23, 59, 59), "UTCTime 49 -> 2049")
    eq(der.read_time(b"20500101000000Z", g, 0, 15), (2050, 1, 1, 0, 0, 0), "GeneralizedTime")
    eq(
        der.read_time(b"99991231235959Z", g, 0, 15),
        (9999, 12, 31, 23, 59, 59),
        "no well-defined expiry",
    )
    for bad, tag in (
        (b"500101000000+", u),
        (b"5001010000Z", u),
        (b"5a0101000000Z", u),
        (b"501301000000Z", u),
        (b"500100000000Z", u),
        (b"500101240000Z", u),
        (b"20500101000000.5Z", g),
        (b"500101000000Z", g),
        (b"20500101000000Z", u),
        (b"500101000000Z", der.INTEGER),
    ):
        raises(CertificateError, der.read_time, bad, tag, 0, len(bad), contains="bad time")


def test_strings():
    eq(der.read_str(b"dev1", 0x0C, 0, 4), "dev1", "utf8")
    eq(der.read_str(b"\x00d\x00\xe9", 0x1E, 0, 4), "d\u00e9", "bmp")
    raises(CertificateError, der.read_str, b"\xff\xfe", 0x0C, 0, 2, contains="bad string")
    raises(CertificateError, der.read_str, b"\x00d\x00", 0x1E, 0, 3, contains="bad string")


def test_split_certs():
    eq(der.split_certs(EC_DER + RSA_DER), [EC_DER, RSA_DER], "two certs")
    eq(der.split_certs(b""), [], "empty")
    raises(
        CertificateError, der.split_certs, EC_DER + b"\x02\x01\x00", contains="not a certificate"
    )
    raises(CertificateError, der.split_certs, EC_DER + RSA_DER[:-1], contains="truncated")


def test_pem_round_trip():
    from binascii import b2a_base64

    b64 = b2a_base64(EC_DER).replace(b"\n", b"")
    body = b"\n".join([b64[i : i + 64] for i in range(0, len(b64), 64)])
    pem = b"junk\n-----BEGIN CERTIFICATE-----\n" + body + b"\n-----END CERTIFICATE-----\n"
    eq(der.pem_to_der(pem), EC_DER, "bytes PEM")
    eq(der.pem_to_der(pem.decode()), EC_DER, "str PEM")
    raises(
        CertificateError, der.pem_to_der, pem, "PRIVATE KEY", contains="-----BEGIN PRIVATE KEY-----"
    )
    raises(
        CertificateError,
        der.pem_to_der,
        b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----",
        contains="empty",
    )
    raises(
        CertificateError,
        der.pem_to_der,
        b"-----BEGIN CERTIFICATE-----\nQUJ\n-----END CERTIFICATE-----",
        contains="bad base64",
    )


def _only_cert_errors(data):
    from upcert import x509

    try:
        x509.Certificate(data)
    except CertificateError as exc:
        true(" at byte " in str(exc) or "mismatch" in str(exc), "no offset in %r" % str(exc))
        return False
    return True


def test_every_truncation_is_a_certificate_error():
    for n in range(len(EC_DER)):
        true(not _only_cert_errors(EC_DER[:n]), "truncated to %d bytes parsed" % n)


def test_mutations_raise_only_certificate_error():
    # Flip each byte of a real certificate: it may still parse, but must never raise anything
    # except CertificateError (a cheap, deterministic fuzz; the real fuzzer comes later).
    data = bytearray(RSA_DER)
    for i in range(len(data)):
        old = data[i]
        for v in (old ^ 0x01, old ^ 0x80, 0xFF, 0x00):
            data[i] = v
            _only_cert_errors(data)
        data[i] = old


def test_random_bytes():
    seed = 12345
    buf = bytearray(64)
    for _ in range(3000):
        for i in range(len(buf)):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            buf[i] = seed >> 16 & 0xFF
        buf[0] = 0x30  # get past the first tag check more often
        _only_cert_errors(buf)
