# AWS IoT Jobs device MQTT API (developer guide, "Jobs device MQTT API") for the rotation: what
# the device does with the reply to StartNextPendingJobExecution (sent without blocking by
# rotation.py), and UpdateJobExecution. In RAM only while used. Reads the Rotation it serves,
# never writes it: serve() returns the job to run and the Rotation records it.
# A job the device cannot take is answered REJECTED with the reason, once (AWS then offers the
# next job: notify-next): another operation, a reply over max_message_bytes (skipped unread by
# mqtt.py, which hands over an mqtt.Big) or one json cannot parse here (out of memory, nesting
# too deep); for those two the jobId and versionNumber come from a constant-memory scan.
import gc

from upcert.big import Big
from upcert.errors import PROTOCOL, RotationError
from upcert.fleet import reply, request

ROTATE = "rotate-certificate"  # job document {"operation": ROTATE} (host: upcert rotate)


def update(rot, client, job_id, version, status, details):
    """UpdateJobExecution: status IN_PROGRESS, SUCCEEDED, FAILED or REJECTED, statusDetails
    (dict of str), expectedVersion version (None: none); waits for the reply (rot.ms), with a
    clientToken from rot.token(). Returns the execution's next version (or None). Rejected
    (ErrorResponse {"code", "message", "clientToken"}) or no reply: RotationError."""
    tok = rot.token()
    body = {"status": status, "statusDetails": details, "clientToken": tok}
    if version is not None:  # unknown (not found in a reply we could not parse): no check
        body["expectedVersion"] = version
    path = job_id + "/update"
    request(client, "jobs " + path, rot.jobs + path, body, rot.ms, tok)
    return version and version + 1


def _execution(rot, ok, raw):
    return reply("jobs start-next", rot.jobs + "start-next", ok, raw).get("execution")


def serve(rot, client, cert, ok, raw):
    """Act on the start-next reply raw (bytes, or an mqtt.Big for one over the size limit; ok:
    it came on /accepted). Returns (jobId, versionNumber) of a rotate-certificate job to run now
    (the Rotation records it and asks for a rotation), or None: no job, the job already being
    served, a job whose identity changed since it started (a SUCCEEDED report lost to a reboot:
    sent now), or a job the device cannot take (REJECTED with the reason: another operation, a
    reply too large to hold or impossible to parse). cert: the identity in use. RotationError
    for a rejected or malformed reply, or a job that cannot be answered."""
    why = None
    if isinstance(raw, Big):
        why = "job document too large: %d bytes > %d" % (raw.n, raw.limit)
    else:
        try:
            try:
                ex = _execution(rot, ok, raw)
            except MemoryError:
                gc.collect()  # the heap may only have been fragmented: once more
                ex = _execution(rot, ok, raw)
        except (MemoryError, RuntimeError) as e:  # RuntimeError: nesting too deep
            ex = None
            why = "job document cannot be parsed on the device (%d bytes): %s" % (
                len(raw),
                "out of memory" if isinstance(e, MemoryError) else e,
            )
            big = Big(len(raw), 0)
            big.feed(raw)
            raw = big
    if why:  # jobId and versionNumber from the scan (depth 2: members of "execution")
        jid = raw.get("jobId", 2)
        if not ok or type(jid) is not str:
            raise RotationError("jobs start-next: %s; no jobId found: not answered" % why, PROTOCOL)
        update(rot, client, jid, raw.get("versionNumber", 2), "REJECTED", {"reason": why})
        rot.say("%s REJECTED: %s" % (jid, why), "job ")
        return None
    if not ex:
        return None
    cur = cert.cert_id()
    jid = ex.get("jobId")
    v = ex.get("versionNumber")
    doc = ex.get("jobDocument")
    op = doc.get("operation") if type(doc) is dict else None
    if op != ROTATE:
        if type(op) is str:
            op = op[:64]
        elif op is not None:
            op = type(op)  # not its repr: a deep list would exceed the recursion limit
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
