"""`upcert batch --aws`: the batch's boards on AWS IoT Core, with the settings `upcert aws setup`
left, the same inventory, audit log and resume as on the local stand-in (upcert.factory.batch).

- A board on a serial port is provisioned as `upcert provision --aws` does (upcert.provision_aws):
  its key and CSR made on the board, AWS's certificate refused unless it carries the board's
  key, the thing with its type, group and attributes, the certificate INACTIVE until the board
  holds it. The inventory records the certificate when AWS has issued it, before the board is
  told to store it.
- An image folder gets a key made on this host (inherent to pre-built images) and a certificate
  from the local CA, registered with AWS (RegisterCertificate): the CA must have been registered
  by `upcert aws register-ca`, which check_images_ca() checks before any board is touched.

Resume: a half-done board that holds its recorded certificate is finished (the certificate made
ACTIVE if the run stopped before that); one that does not has its certificate set INACTIVE and
detached from the thing and its policy (it opens nothing), and is made again. The inventory
keeps AWS's certificate id; what a board or image holds is compared through the certificate's
DER, which AWS returns (AWS's id is the SHA-256 of the DER; moto's is not).
"""

from upcert.errors import UpcertError
from upcert.factory.batch import Line, fingerprint


def settings_endpoint(settings):
    return f"{settings['endpoint']}:{settings.get('port', 8883)}"


def check_images_ca(aws, ca_dir):
    """The local CA (LocalCa) for image targets, once AWS IoT holds it ACTIVE; else one
    UpcertError saying what to run."""
    from upcert.aws.ca import find_ca
    from upcert.pki.ca import LocalCa

    run = f"`upcert aws register-ca --ca-dir {ca_dir} --region {aws.region}`"
    try:
        local = LocalCa.load(ca_dir)
    except UpcertError as e:
        raise UpcertError(f"image targets with --aws need a local CA registered with AWS IoT "
                          f"(their keys are made on this host): {e}; then run {run}") from None
    cid, status = find_ca(aws, local.certificate)
    if cid is None or status != "ACTIVE":
        raise UpcertError(
            f"image targets with --aws: the local CA in {ca_dir} is "
            + ("not registered" if cid is None else f"{status}") + f" in AWS IoT ({aws.region}); "
            f"run {run} first (an image's key is made on this host, so its certificate comes "
            "from that CA and is registered with AWS), or give those boards serial ports")
    return local


class AwsLine(Line):
    """A batch run on AWS IoT Core: aws (upcert.aws.client.Aws), home ($UPCERT_HOME, where
    `aws setup` left aws.json), settings (its contents); local: the LocalCa for image targets
    (check_images_ca), None when the batch has none."""

    def __init__(self, inv, audit, *, aws, home, settings, station, local=None, wifi=None,
                 extra=None, days=365, board="esp32_generic"):
        super().__init__(inv, audit, endpoint=settings_endpoint(settings),
                         ca_dir=local and local.directory, cloud_dir=None, station=station,
                         wifi=wifi, extra=extra, days=days, board=board)
        self.aws, self.home, self.settings, self.local = aws, home, settings, local
        aws.iot  # noqa: B018 (the client is made here, once: boto3 sessions are not thread-safe)

    def _registry(self):
        return None

    def _der_id(self, cert_id):
        """certs.cert_id of AWS's certificate `cert_id`; None when AWS has no such certificate."""
        from cryptography import x509

        from upcert.pki import certs

        iot = self.aws.iot
        with self.aws.errors(f"certificate {cert_id[:16]}"):
            try:
                d = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
            except iot.exceptions.ResourceNotFoundException:
                return None
        return certs.cert_id(x509.load_pem_x509_certificate(d["certificatePem"].encode()))

    def _holds(self, job, cert_id):
        job.step = "check"
        der_id = self._der_id(cert_id) if cert_id else None
        if der_id is None:
            return False  # AWS has no such certificate (retired when provisioning failed)
        if job.images:
            from upcert.factory.image import read_manifest

            try:
                return read_manifest(job.target).get("cert_id") == der_id
            except UpcertError:
                return False
        return self._held(job) == der_id

    def _finish(self, job, cert_id):
        from upcert.aws import identity

        with self.aws.errors(f"certificate {cert_id[:16]}"):
            status = self.aws.iot.describe_certificate(certificateId=cert_id)[
                "certificateDescription"]["status"]
        if status != "ACTIVE":  # the run stopped after the board stored it, before activation
            identity.activate(self.aws, cert_id)
            self.audit(job, "activated", cert_id=cert_id, region=self.aws.region)

    def _roll_back(self, job, cert_id):
        job.step = "roll back"
        iot = self.aws.iot
        if cert_id and self._der_id(cert_id) is not None:
            with self.aws.errors(f"certificate {cert_id[:16]} of thing {job.thing}"):
                iot.update_certificate(certificateId=cert_id, newStatus="INACTIVE")
                arn = iot.describe_certificate(certificateId=cert_id)[
                    "certificateDescription"]["certificateArn"]
                for p in iot.list_attached_policies(target=arn)["policies"]:
                    iot.detach_policy(policyName=p["policyName"], target=arn)
                for thing in iot.list_principal_things(principal=arn)["things"]:
                    iot.detach_thing_principal(thingName=thing, principal=arn)
        self.inv.rolled_back(job.thing)
        self.audit(job, "rolled-back", cert_id=cert_id, region=self.aws.region)

    def _issued(self, job, iss):
        not_after = iss.certificate.not_valid_after_utc.isoformat()
        self.inv.issued(job.thing, iss.certificate_id, fingerprint(iss.certificate), not_after)
        job.cert_id = iss.certificate_id
        self.audit(job, "issued", cert_id=iss.certificate_id, not_after=not_after,
                   store=job.store, region=self.aws.region)
        job.step = "write"

    def _make(self, job, chip, firmware):
        from upcert.provision_aws import device_config

        job.step = "issue"
        cfg = device_config(self.settings, job.thing, job.store, dict(self.extra), self.wifi)
        if job.images:
            self._make_images(job, cfg)
        else:
            from upcert.provision_aws import provision_aws

            provision_aws(self.aws, self.home, job.target, cfg, thing_type=job.thing_type or None,
                          group=job.thing_group or None, attributes=job.attributes,
                          board=self.board, log=lambda m: None,
                          on_issued=lambda iss: self._issued(job, iss))
        self.audit(job, "written", cert_id=job.cert_id)
        job.step = "record"
        self.inv.done(job.thing, chip, firmware, job.target)
        self.audit(job, "done", cert_id=job.cert_id, chip_id=chip, firmware=firmware)
        return "done"

    def _make_images(self, job, cfg):
        from upcert.aws import identity
        from upcert.factory.image import build
        from upcert.pki import certs

        if self.local is None:
            raise UpcertError("image target without a local CA: check_images_ca() first")
        identity.ensure_thing(self.aws, job.thing, job.thing_type or None,
                              job.thing_group or None, job.attributes)
        key = certs.generate_key("ec")
        cert = self.local.issue_device(job.thing, key.public_key(), days=self.days)
        iss = identity.register_certificate(self.aws, cert, self.local.certificate)
        try:
            identity.attach(self.aws, iss, job.thing, self.settings["device_policy"])
            self._issued(job, iss)
            build(job.target, cfg, cert, key, certs.load_certificates(self.settings["roots"]),
                  board=self.board)
        except BaseException:
            try:  # the images were not made: the certificate opens nothing, as provision_aws does
                identity.retire(self.aws, iss.certificate_id)
            except UpcertError:
                pass  # the rerun finds the row issued and rolls it back
            raise
        finally:
            del key
        identity.activate(self.aws, iss.certificate_id)  # the images hold it
