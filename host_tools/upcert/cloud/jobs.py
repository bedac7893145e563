"""The AWS IoT Jobs device MQTT API of the local stand-in, as functions from a request to replies:
start-next, get, <jobId>/get, <jobId>/update, and the notify-next event. Payloads follow the AWS
IoT developer guide, "Jobs device MQTT API" (jobs-mqtt-api) and "ErrorResponse" (jobs-api).
"""

import json
import time

from upcert.cloud.registry import JobError
from upcert.policy import ROTATE_DOCUMENT  # noqa: F401 (one document for AWS and the stand-in)

_EVENT_TOPICS = ("notify", "notify-next")  # the service's own events: never requests


def prefix(thing):
    """The jobs topic prefix of a thing."""
    return f"$aws/things/{thing}/jobs/"


def execution(job):
    """AWS JobExecution for a registry job record."""
    out = {"jobId": job["job_id"], "thingName": job["thing"], "jobDocument": job["document"],
           "status": job["status"], "queuedAt": job["queued_at"],
           "lastUpdatedAt": job["updated_at"], "versionNumber": job["version"],
           "executionNumber": job["execution_number"]}
    if job["status_details"]:
        out["statusDetails"] = job["status_details"]
    if job["started_at"] is not None:
        out["startedAt"] = job["started_at"]
    return out


def summary(job):
    """AWS JobExecutionSummary (GetPendingJobExecutions)."""
    return {"jobId": job["job_id"], "queuedAt": job["queued_at"],
            "lastUpdatedAt": job["updated_at"], "startedAt": job["started_at"],
            "versionNumber": job["version"], "executionNumber": job["execution_number"]}


def state(job):
    """AWS JobExecutionState."""
    return {"status": job["status"], "statusDetails": job["status_details"],
            "versionNumber": job["version"]}


def notify_next(job, now=None):
    """The NextJobExecutionChanged event; without "execution" when nothing is pending."""
    event = {"timestamp": int(now or time.time())}
    if job is not None:
        event["execution"] = execution(job)
    return event


def handle(registry, thing, rest, payload, now=None):
    """Replies [(topic, dict)] to a request on `$aws/things/<thing>/jobs/<rest>`; [] for topics
    that are not requests (replies, events)."""
    now = int(now or time.time())
    parts = rest.split("/")
    if parts[-1] in ("accepted", "rejected") or rest in _EVENT_TOPICS:
        return []
    topic, request = prefix(thing) + rest, {}
    try:
        request = _parse(payload)
        body, suffix = _dispatch(registry, thing, parts, request, now), "/accepted"
    except JobError as e:
        body, suffix = {"code": e.code, "message": str(e)}, "/rejected"
        if e.state is not None:
            body["executionState"] = e.state
    body["timestamp"] = now
    if "clientToken" in request:  # echoed to correlate request and reply
        body["clientToken"] = request["clientToken"]
    return [(topic + suffix, body)]


def _parse(payload):
    if not payload.strip():
        return {}
    try:
        request = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise JobError("InvalidJson", "The request could not be interpreted as UTF-8 JSON.") from None
    if not isinstance(request, dict):
        raise JobError("InvalidJson", "The request must be a JSON object.")
    return request


def _details(request):
    details = request.get("statusDetails")
    if details is not None and not (isinstance(details, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in details.items())):
        raise JobError("InvalidRequest", "statusDetails must map strings to strings.")
    return details


def _dispatch(registry, thing, parts, request, now):
    if parts == ["start-next"]:
        job = registry.start_next(thing, _details(request), now=now)
        return {} if job is None else {"execution": execution(job)}
    if parts == ["get"]:
        jobs = [j for j in registry.list_jobs(thing) if j["status"] in ("QUEUED", "IN_PROGRESS")]
        return {"inProgressJobs": [summary(j) for j in jobs if j["status"] == "IN_PROGRESS"],
                "queuedJobs": [summary(j) for j in jobs if j["status"] == "QUEUED"]}
    if len(parts) == 2 and parts[1] == "get":
        job = registry.next_job(thing) if parts[0] == "$next" else registry.get_job(parts[0])
        if job is None and parts[0] == "$next":
            return {}
        if job is None or job["thing"] != thing:
            raise JobError("ResourceNotFound", f"Job execution {parts[0]} not found.")
        out = execution(job)
        if request.get("includeJobDocument") is False:
            del out["jobDocument"]
        return {"execution": out}
    if len(parts) == 2 and parts[1] == "update":
        return _update(registry, thing, parts[0], request, now)
    raise JobError("InvalidTopic", f"{prefix(thing)}{'/'.join(parts)} maps to no Jobs API.")


def _update(registry, thing, job_id, request, now):
    status = request.get("status")
    if not isinstance(status, str):
        raise JobError("InvalidRequest", "status is required: IN_PROGRESS, SUCCEEDED, FAILED or "
                       "REJECTED.")
    expected = request.get("expectedVersion")
    if expected is not None:
        try:
            expected = int(expected)  # AWS documents it as "number", SDKs send an integer
        except (TypeError, ValueError):
            raise JobError("InvalidRequest", f"expectedVersion {expected!r} is not a number.") from None
    job = registry.update_job(job_id, status, _details(request), expected, thing=thing, now=now)
    out = {}
    if request.get("includeJobExecutionState"):
        out["executionState"] = state(job)
    if request.get("includeJobDocument"):
        out["jobDocument"] = job["document"]
    return out
