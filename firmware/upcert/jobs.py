# AWS IoT Jobs device MQTT API (developer guide, "Jobs device MQTT API") for the rotation: what
# the device does with the reply to StartNextPendingJobExecution (sent without blocking by
# rotation.py), and UpdateJobExecution. In RAM only while used.
from upcert.fleet import reply, request

ROTATE = "rotate-certificate"  # job document {"operation": ROTATE} (host: upcert rotate)


def update(rot, client, job_id, version, status, details):
    """UpdateJobExecution: status IN_PROGRESS, SUCCEEDED, FAILED or REJECTED, statusDetails
    (dict of str), expectedVersion version; waits for the reply (rot.ms). Returns the
    execution's next version. Rejected (ErrorResponse {"code", "message", "clientToken"}) or
    no reply: RotationError."""
    rot.n += 1
    tok = "upcert-%d" % rot.n  # echoed in the reply (<= 64 chars)
    body = {"status": status, "statusDetails": details, "expectedVersion": version, "clientToken": tok}
    path = job_id + "/update"
    request(client, "jobs " + path, rot.jobs + path, body, rot.ms, tok)
    return version + 1


def serve(rot, client, cert, ok, raw):
    """Act on the start-next reply raw (bytes; ok: it came on /accepted): its execution (the
    next pending job, now IN_PROGRESS) with operation rotate-certificate becomes a rotation
    request (done at once if the identity changed since the job started: a report lost to a
    reboot); any other operation is REJECTED with the reason. cert: the identity in use."""
    ex = reply("jobs start-next", rot.jobs + "start-next", ok, raw).get("execution")
    if not ex:
        return
    cur = cert.cert_id()
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
