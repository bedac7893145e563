"""The account's certificate registry and rotation jobs: `upcert certs list|deactivate|revoke|
activate --aws` and `upcert rotate --thing T --aws`, doing on AWS IoT what the same commands do on
the stand-in (one job document for both: upcert.policy.ROTATE_DOCUMENT)."""

import json
import re

from upcert import policy
from upcert.aws.client import AwsError

STATUSES = ("ACTIVE", "INACTIVE", "REVOKED")


def _all_certificates(iot):
    marker, out = None, []
    while True:
        page = iot.list_certificates(pageSize=250, **({"marker": marker} if marker else {}))
        out += page["certificates"]
        marker = page.get("nextMarker")
        if not marker:
            return out


def list_certificates(aws):
    """[{cert_id, status, thing, not_after, created}] of every certificate in the region."""
    from cryptography import x509

    iot = aws.iot
    rows = []
    with aws.errors("the certificate list"):
        for c in _all_certificates(iot):
            d = iot.describe_certificate(certificateId=c["certificateId"])["certificateDescription"]
            things = iot.list_principal_things(principal=c["certificateArn"])["things"]
            try:
                not_after = x509.load_pem_x509_certificate(
                    d["certificatePem"].encode()).not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
            except (KeyError, ValueError):
                not_after = None
            rows.append({"cert_id": c["certificateId"], "status": c["status"],
                         "thing": things[0] if things else None, "not_after": not_after,
                         "created": str(c.get("creationDate", ""))})
    return rows


def resolve(aws, prefix):
    """The certificate id that `prefix` (8+ hex digits, or the whole id) names in the region."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", prefix or ""):
        raise AwsError(f"certificate id {prefix!r}: give the id or a prefix of 8+ lowercase hex "
                       "digits (`upcert certs list --aws`)")
    with aws.errors("the certificate list"):
        ids = [c["certificateId"] for c in _all_certificates(aws.iot)]
    hits = [i for i in ids if i.startswith(prefix)]
    if len(hits) != 1:
        raise AwsError(f"certificate {prefix} in {aws.region}: "
                       + ("none has that id" if not hits else f"{len(hits)} match, give more digits"))
    return hits[0]


def set_status(aws, prefix, status):
    """UpdateCertificate to ACTIVE, INACTIVE or REVOKED; the full id. AWS disconnects a device
    whose certificate stops being ACTIVE (within minutes) and refuses it at its next connect."""
    if status not in STATUSES:
        raise AwsError(f"status {status!r}: one of {', '.join(STATUSES)}")
    cid = resolve(aws, prefix)
    with aws.errors(f"certificate {cid[:16]}"):
        aws.iot.update_certificate(certificateId=cid, newStatus=status)
    return cid


def create_rotation_job(aws, thing):
    """An AWS IoT Job for `thing` with the rotation document; its job id."""
    iot = aws.iot
    job_id = policy.rotation_job_id(thing)
    with aws.errors(f"thing {thing}", hint="provision it first: `upcert provision --aws`"):
        arn = iot.describe_thing(thingName=thing)["thingArn"]
        iot.create_job(jobId=job_id, targets=[arn], document=json.dumps(policy.ROTATE_DOCUMENT),
                       targetSelection="SNAPSHOT",
                       description=f"upcert: rotate the certificate of {thing}")
    return job_id
