"""Amazon Root CA 1 (RSA 2048) and 3 (ECC P-256), the roots of AWS IoT's ATS endpoints, taken from
certifi's bundle by subject and checked by SHA-256 fingerprint."""

import warnings

from upcert.aws.client import AwsError

# SHA-256 fingerprints as Amazon Trust Services publishes them
# (https://www.amazontrust.com/repository/).
AMAZON_ROOTS = {
    "Amazon Root CA 1": "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
    "Amazon Root CA 3": "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4",
}


def amazon_roots(bundle=None):
    """[Amazon Root CA 1, Amazon Root CA 3] (cryptography certificates) from `bundle` (PEM
    bytes; default: certifi's). AwsError when one is missing or its fingerprint is wrong."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    if bundle is None:
        import certifi

        with open(certifi.where(), "rb") as f:
            bundle = f.read()
    found = {}
    for block in bundle.split(b"-----END CERTIFICATE-----"):
        if b"-----BEGIN CERTIFICATE-----" not in block:
            continue
        try:
            with warnings.catch_warnings():  # other roots of the bundle may be old-fashioned
                warnings.simplefilter("ignore")
                cert = x509.load_pem_x509_certificate(block + b"-----END CERTIFICATE-----\n")
        except ValueError:
            continue  # a certificate newer cryptography refuses: not one of ours
        subject = cert.subject
        cn = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        org = subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if cn and org and cn[0].value in AMAZON_ROOTS and org[0].value == "Amazon":
            found.setdefault(cn[0].value, []).append(cert)
    out = []
    for name, want in AMAZON_ROOTS.items():
        good = [c for c in found.get(name, ()) if c.fingerprint(hashes.SHA256()).hex() == want]
        if not good:
            why = "has a certificate with that name but another fingerprint" if found.get(name) \
                else "lacks it"
            raise AwsError(f"{name}: certifi's CA bundle {why}: `pip install -U certifi`, or "
                           "download it from https://www.amazontrust.com/repository/ and check "
                           f"its SHA-256 fingerprint {want}")
        out.append(good[0])
    return out
