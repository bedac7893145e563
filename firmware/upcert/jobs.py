# AWS IoT Jobs device MQTT API (developer guide, "Jobs device MQTT API") for the rotation:
# StartNextPendingJobExecution, UpdateJobExecution, and what the device does with the job it
# gets. In RAM only while used; rotation.py watches notify-next.
from upcert.fleet import request

ROTATE = "rotate-certificate"  # job document {"operation": ROTATE} (host: upcert rotate)


def _call(rot, client, path, body):
    # rot: jobs (topic prefix), n (clientToken counter), ms (timeout). Rejected: ErrorResponse
    # {"code", "message", "clientToken", "timestamp"}.
    rot.n += 1
    tok = body["clientToken"] = "upcert-%d" % rot.n  # echoed in the reply (<= 64 chars)
    return request(client, "jobs " + path, rot.jobs + path, body, rot.ms, tok)


def start_next(rot, client, details=None):
    """StartNextPendingJobExecution: the next pending execution (dict with jobId, jobDocument,
    status, versionNumber, statusDetails), now IN_PROGRESS; None if none waits. details:
    statusDetails (dict of str) recorded when a QUEUED job starts."""
    return _call(rot, client, "start-next", {"statusDetails": details} if details else {}).get(
        "execution"
    )


def update(rot, client, job_id, version, status, details):
    """UpdateJobExecution: status IN_PROGRESS, SUCCEEDED, FAILED or REJECTED, statusDetails
    (dict of str), expectedVersion version. Returns the execution's next version."""
    body = {"status": status, "statusDetails": details, "expectedVersion": version}
    _call(rot, client, job_id + "/update", body)
    return version + 1


def serve(rot, client, cert):
    """Start the next pending job and act on it: rotate-certificate becomes a rotation request
    (done at once if the identity already changed since the job started: a report lost to a
    reboot); any other operation is REJECTED with the reason. cert: the certificate in use."""
    cur = cert.cert_id()
    ex = start_next(rot, client, {"oldCertificateId": cur})
    if not ex:
        return
    jid = ex.get("jobId")
    v = ex.get("versionNumber")
    doc = ex.get("jobDocument")
    op = doc.get("operation") if type(doc) is dict else None
    if op != ROTATE:
        why = "unknown operation %r: this device runs %r" % (op, ROTATE)
        update(rot, client, jid, v, "REJECTED", {"reason": why})
        rot.say("%s REJECTED: %s" % (jid, why), "job ")
        return
    if rot.job and rot.job[0] == jid:
        return  # on it already (backing off after a failure)
    rot.job = (jid, v)
    old = (ex.get("statusDetails") or {}).get("oldCertificateId")
    if old and old != cur:
        report(rot, client, "SUCCEEDED", {"oldCertificateId": old, "newCertificateId": cur})
        return
    rot.say("%s: %s" % (jid, ROTATE), "job ")
    rot.request("job " + jid)


def report(rot, client, status, details):
    """Final status of the job being served, if any; a lost report is repeated by serve() after
    the next connect (the job is still IN_PROGRESS then)."""
    job, rot.job = rot.job, None
    if job is None:
        return
    why = ""
    try:
        update(rot, client, job[0], job[1], status, details)
    except Exception as e:
        why = " not reported: %s" % e
    rot.say("%s %s%s" % (job[0], status, why), "job ")
