"""A thing's identity on AWS IoT: a certificate from the board's CSR (CreateCertificateFromCsr,
refused unless it carries the board's public key), or a local-CA certificate registered
(RegisterCertificate), or, behind a flag that says so, a key made by AWS
(CreateKeysAndCertificate); the thing with its type, group and attributes; policy and principal
attached; and undoing a certificate that a board never took. Certificates are created INACTIVE
and activated only once the board holds them: a certificate whose board lost power before
storing it opens nothing."""

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from upcert.aws.client import AwsError
from upcert.pki import certs

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class Issued:
    """A certificate AWS holds for a thing (still INACTIVE until activate())."""
    certificate: object  # cryptography x509.Certificate
    certificate_id: str
    arn: str
    private_key: object = None  # only from CreateKeysAndCertificate: the key that travelled


def public_key_matches(cert, public_key):
    """True when the certificate carries exactly this public key (SubjectPublicKeyInfo DER)."""
    return cert.public_key().public_bytes(*_SPKI) == public_key.public_bytes(*_SPKI)


def certificate_from_csr(aws, csr):
    """CreateCertificateFromCsr for `csr` (cryptography CSR), INACTIVE. Refuses, and deletes what
    AWS made, when the certificate's public key is not the CSR's: nothing is written anywhere
    with a certificate for a key the board does not hold."""
    if not csr.is_signature_valid:
        raise AwsError("the board's CSR does not verify (its signature is bad): nothing was sent")
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    iot = aws.iot
    with aws.errors("the board's CSR"):
        got = iot.create_certificate_from_csr(certificateSigningRequest=pem, setAsActive=False)
    issued = Issued(x509.load_pem_x509_certificate(got["certificatePem"].encode()),
                    got["certificateId"], got["certificateArn"])
    if not public_key_matches(issued.certificate, csr.public_key()):
        retire(aws, issued.certificate_id)
        raise AwsError(f"CreateCertificateFromCsr answered certificate {issued.certificate_id[:16]} "
                       "for another public key than the board's CSR: refused, nothing written to "
                       "the board, and that certificate was set INACTIVE and deleted")
    return issued


def keys_and_certificate(aws):
    """CreateKeysAndCertificate, INACTIVE: AWS makes the key pair, and the private key travels
    over the network to this host and then to the board."""
    with aws.errors("a new key and certificate"):
        got = aws.iot.create_keys_and_certificate(setAsActive=False)
    key = serialization.load_pem_private_key(got["keyPair"]["PrivateKey"].encode(), None)
    cert = x509.load_pem_x509_certificate(got["certificatePem"].encode())
    if not public_key_matches(cert, key.public_key()):
        retire(aws, got["certificateId"])
        raise AwsError("CreateKeysAndCertificate answered a certificate that is not for its key: "
                       "refused; that certificate was set INACTIVE and deleted")
    return Issued(cert, got["certificateId"], got["certificateArn"], key)


def register_certificate(aws, cert, ca_cert):
    """RegisterCertificate: a certificate of a CA registered with `upcert aws register-ca`,
    INACTIVE until activate()."""
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
    with aws.errors(f"certificate {certs.cert_id(cert)[:16]}",
                    hint="register its CA first: `upcert aws register-ca --ca-dir DIR`"):
        got = aws.iot.register_certificate(certificatePem=pem(cert), caCertificatePem=pem(ca_cert),
                                           status="INACTIVE")
    return Issued(cert, got["certificateId"], got["certificateArn"])


def retire(aws, certificate_id):
    """Set INACTIVE and delete a certificate no board took (best effort: detached first)."""
    iot = aws.iot
    with aws.errors(f"certificate {certificate_id[:16]}"):
        iot.update_certificate(certificateId=certificate_id, newStatus="INACTIVE")
        arn = iot.describe_certificate(certificateId=certificate_id)[
            "certificateDescription"]["certificateArn"]
        for p in iot.list_attached_policies(target=arn)["policies"]:
            iot.detach_policy(policyName=p["policyName"], target=arn)
        for thing in iot.list_principal_things(principal=arn)["things"]:
            iot.detach_thing_principal(thingName=thing, principal=arn)
        iot.delete_certificate(certificateId=certificate_id)


def _create(call, iot, **kw):
    """True when call(**kw) created the resource; False when it exists after all: boards of one
    batch share a thing type and group, and another board's thread (or another station) may
    create it between our describe and our create, and the create is then refused
    (ResourceAlreadyExists: AWS's answer for a name taken; moto's for a thing group)."""
    try:
        call(**kw)
        return True
    except iot.exceptions.ResourceAlreadyExistsException:
        return False


def ensure_thing(aws, name, thing_type=None, group=None, attributes=None):
    """Create the thing (or update its type and attributes), and put it in the group; what was
    done, as text."""
    iot = aws.iot
    payload = {"attributes": dict(attributes or {}), "merge": True}
    done = []
    with aws.errors(f"thing {name}"):
        if thing_type:
            try:
                iot.describe_thing_type(thingTypeName=thing_type)
            except iot.exceptions.ResourceNotFoundException:
                if _create(iot.create_thing_type, iot, thingTypeName=thing_type):
                    done.append(f"thing type {thing_type} created")
        try:
            have = iot.describe_thing(thingName=name)
        except iot.exceptions.ResourceNotFoundException:
            kw = {"thingName": name, "attributePayload": payload}
            if thing_type:
                kw["thingTypeName"] = thing_type
            iot.create_thing(**kw)
            done.append(f"thing {name} created")
        else:
            kw = {}
            if thing_type and have.get("thingTypeName") != thing_type:
                kw["thingTypeName"] = thing_type
            if attributes and any(have.get("attributes", {}).get(k) != v
                                  for k, v in attributes.items()):
                kw["attributePayload"] = payload
            if kw:
                iot.update_thing(thingName=name, **kw)
                done.append(f"thing {name} updated")
            else:
                done.append(f"thing {name} exists")
        if group:
            try:
                iot.describe_thing_group(thingGroupName=group)
            except iot.exceptions.ResourceNotFoundException:
                if _create(iot.create_thing_group, iot, thingGroupName=group):
                    done.append(f"thing group {group} created")
            iot.add_thing_to_thing_group(thingGroupName=group, thingName=name)
    return done


def attach(aws, issued, thing, policy_name):
    """Attach the device policy to the certificate and the certificate to the thing."""
    with aws.errors(f"certificate {issued.certificate_id[:16]} of thing {thing}",
                    hint="run `upcert aws setup` first"):
        aws.iot.attach_policy(policyName=policy_name, target=issued.arn)
        aws.iot.attach_thing_principal(thingName=thing, principal=issued.arn)


def activate(aws, certificate_id):
    with aws.errors(f"certificate {certificate_id[:16]}"):
        aws.iot.update_certificate(certificateId=certificate_id, newStatus="ACTIVE")


def thing_of(aws, arn):
    things = aws.iot.list_principal_things(principal=arn)["things"]
    return things[0] if things else None
