# AWS IoT Jobs device MQTT API (developer guide, "Jobs device MQTT API") for the rotation: what
# the device does with the reply to StartNextPendingJobExecution (sent without blocking by
# rotation.py), and UpdateJobExecution. In RAM only while used. Reads the Rotation it serves,
# never writes it: serve() returns the job to run and the Rotation records it.
from upcert.fleet import reply, request

ROTATE = "rotate-certificate"  # job document {"operation": ROTATE} (host: upcert rotate)


def update(rot, client, job_id, version, status, details):
    """UpdateJobExecution: status IN_PROGRESS, SUCCEEDED, FAILED or REJECTED, statusDetails
    (dict of str), expectedVersion version; waits for the reply (rot.ms), with a clientToken
    from rot.token(). Returns the execution's next version. Rejected (ErrorResponse {"code",
    "message", "clientToken"}) or no reply: RotationError."""
    tok = rot.token()
    body = {"status": status, "statusDetails": details, "expectedVersion": version, "clientToken": tok}
    path = job_id + "/update"
    request(client, "jobs " + path, rot.jobs + path, body, rot.ms, tok)
    return version + 1


def serve(rot, client, cert, ok, raw):
    """Act on the start-next reply raw (bytes; ok: it came on /accepted). Returns (jobId,
    versionNumber) of a rotate-certificate job to run now (the Rotation records it and asks for
    a rotation), or None: no job, the job already being served, a job whose identity changed
    since it started (a SUCCEEDED report lost to a reboot: sent now), or another operation
    (REJECTED with the reason). cert: the identity in use."""
    ex = reply("jobs start-next", rot.jobs + "start-next", ok, raw).get("execution")
    if not ex:
        return None
    cur = cert.cert_id()
    jid = ex.get("jobId")
    v = ex.get("versionNumber")
    doc = ex.get("jobDocument")
    op = doc.get("operation") if type(doc) is dict else None
    if op != ROTATE:
        why = "unknown operation %r: this device runs %r" % (op, ROTATE)
        update(rot, client, jid, v, "REJECTED", {"reason": why})
        rot.say("%s REJECTED: %s" % (jid, why), "job ")
        return None
    if rot.job and rot.job[0] == jid:
        return None  # on it already (backing off after a failure)
    old = (ex.get("statusDetails") or {}).get("oldCertificateId")
    if old and old != cur:
        report(rot, client, (jid, v), "SUCCEEDED", {"oldCertificateId": old, "newCertificateId": cur})
        return None
    rot.say("%s: %s" % (jid, ROTATE), "job ")
    return jid, v


def report(rot, client, job, status, details):
    """Final status of job (jobId, versionNumber); a lost report is repeated by serve() after
    the next connect (the job is still IN_PROGRESS then). Logged; raises only MemoryError (the
    caller keeps the report owed)."""
    why = ""
    try:
        update(rot, client, job[0], job[1], status, details)
    except MemoryError:
        raise
    except Exception as e:
        why = " not reported: %s" % e
    rot.say("%s %s%s" % (job[0], status, why), "job ")
