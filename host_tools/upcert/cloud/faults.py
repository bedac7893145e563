"""Fault modes of the stand-in's provisioning service (`upcert cloud up --fault NAME`): each one
bends the answer to CreateCertificateFromCsr, so that tests and people can watch a device refuse
a bad certificate or survive a silent service. Off unless asked for; never part of the normal path.
"""

import datetime
from pathlib import Path

from upcert.errors import UpcertError

# cryptography is imported where a certificate is made: the CLI reads FAULTS for every --help.

# name -> what the service does, and what a device should do about it (for --help and logs)
FAULTS = {
    "wrong-key": "issue each certificate for a fresh key instead of the CSR's: the device must "
                 "refuse it (not for its new key)",
    "silent": "never answer CreateCertificateFromCsr: the device must time out, back off and "
              "keep its identity",
    "reject": "reject every CreateCertificateFromCsr with AWS's error payload (statusCode 400, "
              "errorCode InvalidCsr)",
    "expired": "issue certificates that expired an hour ago: the device must refuse them",
    "other-issuer": "sign with an impostor CA (the local CA's name, another key) that neither "
                    "device nor broker trusts: the device must refuse the certificate, or the "
                    "broker its trial connection",
}
# AWS documents only the shape {"statusCode", "errorCode", "errorMessage"} (fleet-provision-api);
# the code is the one this stand-in uses for a bad CSR (service.py).
REJECT = (400, "InvalidCsr", "rejected by the stand-in's fault mode 'reject' "
          "(`upcert cloud up --fault reject`): start the cloud without --fault to get certificates")
_EXPIRED_AGO = datetime.timedelta(hours=1)
_CA_DAYS = 3653


def check(fault):
    """fault (a name of FAULTS, or None/"" for none) -> the name or None; UpcertError otherwise."""
    if not fault:
        return None
    if fault not in FAULTS:
        raise UpcertError(f"unknown fault {fault!r}: choose one of {', '.join(FAULTS)} "
                          "(or none for a stand-in that behaves like AWS)")
    return fault


def impostor_ca(ca):
    """A CA with the same subject name and key type as ca but a fresh key (kept in memory only):
    what it signs looks like ca's work by name, and verifies against nothing anyone trusts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from upcert.pki.ca import LocalCa
    from upcert.pki.certs import generate_key

    key = generate_key(ca.key_type)
    now = datetime.datetime.now(datetime.timezone.utc)
    name = ca.certificate.subject
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return LocalCa(Path(ca.directory) / "impostor-never-written", cert, key)


class Fault:
    """One fault mode for a Provisioner: silent(), reject() and issue() say how to bend a
    CreateCertificateFromCsr answer; with name None nothing is bent."""

    def __init__(self, name):
        self.name = check(name)
        self._impostor = None

    def silent(self):
        """True when the request must go unanswered."""
        return self.name == "silent"

    def reject(self):
        """(statusCode, errorCode, errorMessage) of the rejection to send, or None."""
        return REJECT if self.name == "reject" else None

    def issue(self, ca, thing, public_key, not_after, now):
        """The certificate to answer with: ca.issue_device(thing, public_key, ...) as asked, or
        as the fault bends it (another key, expired, another issuer)."""
        from upcert.pki.certs import generate_key

        not_before = None
        if self.name == "wrong-key":
            public_key = generate_key("ec").public_key()  # its private key is dropped at once
        elif self.name == "expired":
            not_before, not_after = now - 2 * _EXPIRED_AGO, now - _EXPIRED_AGO
        elif self.name == "other-issuer":
            self._impostor = self._impostor or impostor_ca(ca)
            ca = self._impostor
        return ca.issue_device(thing, public_key, not_before=not_before, not_after=not_after)
