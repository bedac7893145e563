# The TLS context for AWS IoT with MicroPython's built-in `tls` module (mbedTLS): made at a
# connect and at a rotation's trial (tlsconn.make_context), in RAM only meanwhile.
import tls

from upcert.errors import CertificateError, ConnectError


def aws_suites():
    """The AWS IoT TLS 1.2 suites (security policy IoTSecurityPolicy_TLS12_1_2_2022_10,
    developer guide "Transport security in AWS IoT Core") in mbedTLS names, in order:
    ECDHE-ECDSA and ECDHE-RSA with each cipher below, AES128-GCM first; then RSA key exchange
    with the same ciphers, except that its AES256-CBC suite uses SHA256 (OpenSSL AES256-SHA256).
    18 suites, built when asked: kept in RAM they would cost about 1 KB for good."""
    ciphers = (
        "128-GCM-SHA256",
        "128-CBC-SHA256",
        "128-CBC-SHA",
        "256-GCM-SHA384",
        "256-CBC-SHA384",
        "256-CBC-SHA",
    )
    return tuple(
        ["TLS-%s-WITH-AES-%s" % (kx, c) for c in ciphers for kx in ("ECDHE-ECDSA", "ECDHE-RSA")]
        + ["TLS-RSA-WITH-AES-" + (c if c != "256-CBC-SHA384" else "256-CBC-SHA256") for c in ciphers]
    )


def make(cert_der, key_der, roots_der_list, room=None):
    """SSLContext for AWS IoT: client cert + key (DER), every root trusted, AWS suites only.

    key_der None means the key lives in a secure element: refused (ConnectError), never a
    fallback. Bad DER raises CertificateError. room(): called just before the context object is
    made (the caller frees the block it kept for it: app.rotation_connector).
    """
    if key_der is None:
        raise ConnectError(
            "key in a secure element: the tls module takes only key bytes; set config \"tls\""
            " to \"auto\" (upcert's own TLS client)"
        )
    if not roots_der_list:
        raise CertificateError("no trust anchors: roots.der holds no certificate")
    if room:
        room()
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    n = 0
    for der in roots_der_list:
        n += 1
        try:
            # Positional only: the keyword form (cadata=) raises TypeError. Each call appends to
            # the context's CA chain, so every root is trusted (checked with two roots).
            ctx.load_verify_locations(der)
        except ValueError:
            raise CertificateError(
                "trust anchor %d in roots.der: not a DER certificate" % n
            ) from None
    try:
        ctx.load_cert_chain(cert_der, key_der)
    except ValueError as e:
        # mbedTLS parses the key first: "invalid key", then "invalid cert". The text names no
        # key material.
        raise CertificateError(
            "device certificate or key rejected by mbedTLS (%s): store both as DER" % e
        ) from None
    ctx.verify_mode = tls.CERT_REQUIRED
    have = ctx.get_ciphers()
    suites = [s for s in aws_suites() if s in have]
    have = None
    if not suites:
        raise ConnectError("this firmware's mbedTLS has none of the AWS IoT TLS 1.2 suites")
    ctx.set_ciphers(suites)
    return ctx
