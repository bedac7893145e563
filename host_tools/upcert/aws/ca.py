"""Bring your own CA: `upcert aws register-ca` registers a CA (the local one, or a customer's) with
AWS IoT by proof of possession (GetRegistrationCode; a verification certificate whose subject CN is
that code, signed by the CA's key; RegisterCACertificate), ACTIVE, optionally with automatic
registration of the devices it signs. Then device certificates of that CA are registered
(RegisterCertificate) instead of being issued by AWS. AWS IoT Developer Guide, "Register a CA
certificate"."""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from upcert.aws.client import AwsError
from upcert.pki import certs


def verification_certificate(ca_cert, ca_key, code):
    """A certificate whose subject CN is the registration code, for a fresh key, signed by the
    CA's key: the proof that we hold it."""
    key = certs.generate_key("ec")
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))


def find_ca(aws, ca_cert):
    """The id of this CA certificate in the region, or None."""
    from upcert.pki.certs import cert_id

    want = cert_id(ca_cert)
    with aws.errors("the CA certificate list"):
        for c in aws.iot.list_ca_certificates(pageSize=250)["certificates"]:
            d = aws.iot.describe_ca_certificate(certificateId=c["certificateId"])
            pem = d["certificateDescription"]["certificatePem"]
            if cert_id(x509.load_pem_x509_certificate(pem.encode())) == want:
                return c["certificateId"], d["certificateDescription"]["status"]
    return None, None


def register_ca(aws, ca_cert, prove, auto_registration=False):
    """(CA certificate id, 'created'|'updated'|'unchanged'). prove(code) -> the verification
    certificate for the registration code, signed by the CA's key (verification_certificate, or
    the local CA's own issue)."""
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
    bc = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value \
        if any(isinstance(e.value, x509.BasicConstraints) for e in ca_cert.extensions) else None
    if bc is None or not bc.ca:
        raise AwsError("that certificate is not a CA (basicConstraints CA:TRUE): give the CA's "
                       "folder (ca.pem + ca.key)")
    iot = aws.iot
    cid, status = find_ca(aws, ca_cert)
    auto = "ENABLE" if auto_registration else "DISABLE"
    with aws.errors("the CA certificate", hint="AWS IoT refuses a CA it already holds"):
        if cid is None:
            code = iot.get_registration_code()["registrationCode"]
            verification = prove(code)
            got = iot.register_ca_certificate(caCertificate=pem(ca_cert),
                                              verificationCertificate=pem(verification),
                                              setAsActive=True, allowAutoRegistration=auto_registration)
            return got["certificateId"], "created"
        if status != "ACTIVE" or auto_registration:
            iot.update_ca_certificate(certificateId=cid, newStatus="ACTIVE",
                                      newAutoRegistrationStatus=auto)
            return cid, "updated"
        return cid, "unchanged"
