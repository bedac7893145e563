"""The provisioning service of the local AWS IoT stand-in: answers devices' Fleet Provisioning
(create-from-csr, provision) and Jobs requests as the admin identity, and holds the functions the
CLI calls. Cloud.up() runs it in the background: `python -m upcert.cloud.service --state <dir>`.
"""

import argparse
import datetime
import json
import logging
import os
import queue
import re
import signal
import sys
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from upcert.cloud import jobs
from upcert.cloud.cbor import cbor
from upcert.cloud.faults import Fault
from upcert.cloud.limits import Throttle, parse_validity  # noqa: F401 (tests use them from here)
from upcert.cloud.registry import TOKEN_TTL_S, Registry, TokenError
from upcert.cloud.standin import CLAIM_PREFIX, Cloud
from upcert.errors import UpcertError
from upcert.pki.certs import CertError, common_name
from upcert.validate import write_private

FROM, TO = "upcert/from/", "upcert/to/"  # topics of the identity plugin (plugin/*.c)
# A device's report of a certificate it abandoned mid-rotation, outside a job, in its own topic
# space: {"event": "rotation-abandoned", "certificateId": ID, "step": STEP}.
ROTATION_TOPIC = "things/+/rotation"
DEFAULT_TEMPLATE = "upcert-rotation"
# Provisioning by claim (AWS IoT developer guide, "Provisioning by claim"): the claim template,
# which only a claim certificate may use (the claim policy allows nothing else), and which
# creates the thing a board names. The plugin gives a claim connection the username
# "<client id>@<claim CN>" (claim CNs start with standin.CLAIM_PREFIX).
CLAIM_TEMPLATE = "upcert-claim"
SERVICE_CLIENT_ID = "upcert-provisioning"
_CURVES = ("secp256r1", "secp384r1")
_POLL_S = 0.25  # how often new jobs are looked for (notify-next)
_BATCH = 200  # requests answered per CRL rewrite, at most
_SWEEP_S = 1.0  # how often certificates left PENDING_ACTIVATION past their token are looked for
log = logging.getLogger("upcert.cloud.service")


class ProvisioningError(UpcertError):
    """The provisioning service cannot start or run, or a request to it cannot be done."""


class Rejection(Exception):
    """A request AWS would reject; becomes {"statusCode", "errorCode", "errorMessage"}."""

    def __init__(self, status_code, error_code, message):
        super().__init__(message)
        self.status_code, self.error_code = status_code, error_code


class Provisioner:
    """Requests to replies, without MQTT: see handle(). ca signs, registry records; fault: a
    name of upcert.cloud.faults.FAULTS to bend CreateCertificateFromCsr answers (tests), or None.
    csr_rate/csr_burst: the CreateCertificateFromCsr quota per thing (requests per second, in a
    row; clock for it); token_ttl: how long an ownership token, and a certificate left
    PENDING_ACTIVATION, lives (expire() deletes those)."""

    def __init__(self, ca, registry, validity=datetime.timedelta(days=365),
                 templates=(DEFAULT_TEMPLATE,), fault=None, csr_rate=1.0, csr_burst=5,
                 token_ttl=datetime.timedelta(seconds=TOKEN_TTL_S), clock=time.monotonic):
        self.ca, self.registry = ca, registry
        self.validity, self.templates = validity, tuple(templates)
        self.fault = Fault(fault)
        self.throttle = Throttle(csr_rate, csr_burst, clock)
        self.token_ttl = token_ttl

    def handle(self, topic, payload, now=None):
        """(replies [(topic, bytes)], changed) for a message on upcert/from/<thing>/<topic> or
        things/<thing>/rotation; changed means a certificate status changed (the CRL must be
        rewritten)."""
        parts = topic.split("/")
        if len(parts) == 3 and parts[0] == "things" and parts[2] == "rotation":
            return [], self._abandoned_event(parts[1], payload)
        if not topic.startswith(FROM):
            return [], False
        thing, _, aws = topic[len(FROM):].partition("/")
        parts = aws.split("/")
        if aws.startswith(jobs.prefix(thing)):
            out = jobs.handle(self.registry, thing, aws[len(jobs.prefix(thing)):], payload, now)
            changed = any(t.endswith("/update/accepted") for t, _ in out) and (
                self._retire(thing, payload) | self._abandoned_job(thing, payload))
            return [(f"{TO}{thing}/{t}", json.dumps(b).encode()) for t, b in out], changed
        if parts[:3] == ["$aws", "certificates", "create-from-csr"] and len(parts) == 4:
            if self.fault.silent():
                log.info("fault silent: %s from %s left unanswered", aws, thing)
                return [], False
            return self._answer(thing, aws, parts[3], self._create_from_csr, payload)
        if parts[:2] == ["$aws", "provisioning-templates"] and parts[3:4] == ["provision"] \
                and len(parts) == 5:
            return self._answer(thing, aws, parts[4],
                                lambda t, r: self._provision(t, parts[2], r, now), payload)
        return [], False  # e.g. a reply topic a device wrote to: nothing to answer

    def _retire(self, thing, payload):
        """AWS's rotation advice, as a rule: once a device reports a rotation job SUCCEEDED
        with {"oldCertificateId", "newCertificateId"} (it connected with the new one), set the
        old certificate INACTIVE. Both must be this thing's; the new one must be ACTIVE."""
        try:
            request = json.loads(payload)
            details = request.get("statusDetails") or {}
            old, new = details.get("oldCertificateId"), details.get("newCertificateId")
        except (ValueError, AttributeError, UnicodeDecodeError):
            return False
        if request.get("status") != "SUCCEEDED" or not old or not new or old == new:
            return False
        old_rec, new_rec = self.registry.get(old), self.registry.get(new)
        if not (old_rec and new_rec and old_rec["thing"] == thing == new_rec["thing"]
                and new_rec["status"] == "ACTIVE" and old_rec["status"] == "ACTIVE"):
            return False
        self.registry.set_status(old_rec["cert_id"], "INACTIVE")
        log.info("%s rotated to %s: old certificate %s set INACTIVE", thing, new[:16], old[:16])
        return True

    def _abandoned_job(self, thing, payload):
        """A rotation job reported FAILED with statusDetails {"abandonedCertificateId": ID}: the
        certificate the device made and then gave up is set INACTIVE (it must not stay a usable
        identity), when it is registered to this thing."""
        try:
            request = json.loads(payload)
            cert_id = (request.get("statusDetails") or {}).get("abandonedCertificateId")
        except (ValueError, AttributeError, UnicodeDecodeError):
            return False
        if request.get("status") != "FAILED" or not cert_id:
            return False
        return self._deactivate_abandoned(thing, cert_id, "job update FAILED")

    def _abandoned_event(self, thing, payload):
        """{"event": "rotation-abandoned", "certificateId": ID, "step": STEP} on
        things/<thing>/rotation (the broker's ACL lets only that thing, or the admin, publish
        there): the same rule as _abandoned_job, for a rotation without a job; and
        {"event": "rotation-done", "oldCertificateId", "newCertificateId"}: _retire's."""
        try:
            event = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            log.info("things/%s/rotation: not JSON, ignored", thing)
            return False
        if isinstance(event, dict) and event.get("event") == "rotation-done":
            # a rotation without a job, its new identity proven: the old one retired as for a
            # job reported SUCCEEDED (_retire's checks: both the thing's, both ACTIVE)
            details = {k: event.get(k) for k in ("oldCertificateId", "newCertificateId")}
            return self._retire(thing, json.dumps({"status": "SUCCEEDED",
                                                   "statusDetails": details}))
        if not isinstance(event, dict) or event.get("event") != "rotation-abandoned":
            return False
        return self._deactivate_abandoned(thing, event.get("certificateId"),
                                          f"rotation abandoned at step {event.get('step')!r}")

    def _deactivate_abandoned(self, thing, cert_id, why):
        """Set cert_id INACTIVE if it is registered to thing (ACTIVE or PENDING_ACTIVATION; an
        INACTIVE or REVOKED one stays as it is); another thing's certificate, an unknown id or
        a malformed one is logged and ignored. True when a status changed."""
        if not isinstance(cert_id, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", cert_id):
            log.warning("%s from %s: certificate id %r is not 64 hex digits: ignored", why, thing,
                        cert_id)
            return False
        record = self.registry.get(cert_id)
        if record is None or record["thing"] != thing:
            log.warning("%s from %s names certificate %s, which is %s: ignored", why, thing,
                        cert_id[:16], "not registered" if record is None else "another thing's")
            return False
        if record["status"] not in ("ACTIVE", "PENDING_ACTIVATION"):
            return False
        self.registry.set_status(record["cert_id"], "INACTIVE")
        log.info("%s: %s abandoned certificate %s (%s): set INACTIVE", why, thing, cert_id[:16],
                 record["status"])
        return True

    def expire(self, now=None):
        """Delete the certificates left PENDING_ACTIVATION after their ownership token expired
        (AWS deletes them); True when there were some (the CRL must be rewritten)."""
        gone = self.registry.expire_pending(now=now)
        for record in gone:
            log.info("certificate %s of %s never provisioned within %s: deleted",
                     record["cert_id"][:12], record["thing"], self.token_ttl)
        return bool(gone)

    def _answer(self, thing, topic, fmt, fn, payload):
        try:
            if fmt != "json":
                raise Rejection(400, "InvalidPayload", f"payload format {fmt!r} is not "
                                f"supported here: publish JSON to {topic.rsplit('/', 1)[0]}/json")
            body, suffix = fn(thing, _json(payload)), "/accepted"
        except Rejection as r:
            body = {"statusCode": r.status_code, "errorCode": r.error_code,
                    "errorMessage": str(r)}
            suffix = "/rejected"
            log.info("%s from %s rejected: %s %s", topic, thing, r.error_code, r)
        data = cbor(body) if fmt == "cbor" else json.dumps(body).encode()
        return [(f"{TO}{thing}/{topic}{suffix}", data)], suffix == "/accepted"

    def _create_from_csr(self, user, request):
        thing, claim = requester(user)
        if not self.throttle.allow(user):
            raise Rejection(429, "ThrottlingException", "Rate exceeded: CreateCertificateFromCsr"
                            f" is limited to {self.throttle.rate:g} request(s) per second per "
                            f"thing (burst {self.throttle.burst}); retry in "
                            f"{max(0.1, self.throttle.retry_after(user)):.1f} s")
        if self.fault.reject():
            raise Rejection(*self.fault.reject())
        pem = request.get("certificateSigningRequest")
        if not isinstance(pem, str) or not pem.strip():
            raise Rejection(400, "InvalidCsr", "certificateSigningRequest is missing: send "
                            '{"certificateSigningRequest": "-----BEGIN CERTIFICATE REQUEST..."}')
        try:
            csr = x509.load_pem_x509_csr(pem.encode())
            key = csr.public_key()
        except (ValueError, TypeError):
            raise Rejection(400, "InvalidCsr", "certificateSigningRequest is not a PEM "
                            "certificate signing request (-----BEGIN CERTIFICATE REQUEST-----)") from None
        if not csr.is_signature_valid:
            raise Rejection(400, "InvalidCsr", "the CSR's signature does not verify: sign it "
                            "with the private key whose public key it carries")
        if not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVES
                or isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048):
            raise Rejection(400, "InvalidCsr", f"the CSR's key ({_key_name(key)}) is not "
                            "accepted: use EC P-256 or P-384, or RSA with 2048 bits or more")
        cn = common_name(csr.subject)
        if cn != thing:
            raise Rejection(403, "Forbidden", f"the CSR's subject CN {cn!r} is not your " + (
                f"client id {thing!r}: a board claims the thing it connects as" if claim else
                f"thing name {thing!r}: a device may renew only its own identity"))
        now = datetime.datetime.now(datetime.timezone.utc)
        try:
            cert = self.fault.issue(self.ca, thing, key, now + self.validity, now)
        except CertError as e:
            raise Rejection(400, "InvalidCsr", str(e)) from None
        # AWS: a certificate made over MQTT is PENDING_ACTIVATION until RegisterThing
        record = self.registry.register(cert, thing, "PENDING_ACTIVATION")
        token = self.registry.issue_token(record["cert_id"],
                                          ttl_s=self.token_ttl.total_seconds())
        log.info("issued certificate %s for %s, valid until %s%s", record["cert_id"][:12], thing,
                 cert.not_valid_after_utc.isoformat(),
                 f" (fault {self.fault.name})" if self.fault.name else "")
        return {"certificateId": record["cert_id"], "certificatePem": record["pem"],
                "certificateOwnershipToken": token}

    def _provision(self, user, template, request, now):
        thing, claim = requester(user)
        if template not in self.templates + (CLAIM_TEMPLATE,):
            raise Rejection(404, "ResourceNotFound", f"provisioning template {template!r} does "
                            f"not exist: this stand-in offers "
                            f"{', '.join(self.templates + (CLAIM_TEMPLATE,))}")
        if claim != (template == CLAIM_TEMPLATE):
            raise Rejection(403, "Forbidden", f"template {template!r} is for " + (
                "devices with their own certificate, not for a claim" if claim else
                "claim certificates only (provisioning by claim)"))
        params = request.get("parameters", {})
        if not isinstance(params, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
            raise Rejection(400, "InvalidParameters", "parameters must map strings to strings")
        if params.get("ThingName", thing) != thing:
            raise Rejection(403, "Forbidden", f"ThingName {params['ThingName']!r} is not your " + (
                f"client id {thing!r}: a board claims the thing it connects as" if claim else
                f"thing {thing!r}: a device may provision only itself"))
        try:
            record = self.registry.consume_token(request.get("certificateOwnershipToken"),
                                                 thing, now=now)
        except TokenError as e:
            raise Rejection(e.status_code, e.error_code, str(e)) from None
        if claim:
            self.registry.put_thing(thing, dict(params))
        log.info("certificate %s of %s is %s and attached%s", record["cert_id"][:12], thing,
                 record["status"], f" (claimed with {user.partition('@')[2]})" if claim else "")
        return {"deviceConfiguration": {}, "thingName": thing}


def requester(user):
    """(thing, is a claim) for the username the identity plugin gave a connection: a thing's
    own name, or "<client id>@<claim CN>" for a claim (the thing it asks to become)."""
    cid, at, cn = user.partition("@")
    return (cid, True) if at and cn.startswith(CLAIM_PREFIX) else (user, False)


def _key_name(key):
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    return type(key).__name__.lstrip("_")


def _json(payload):
    try:
        request = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise Rejection(400, "InvalidPayload", "the request is not UTF-8 JSON") from None
    if not isinstance(request, dict):
        raise Rejection(400, "InvalidPayload", "the request must be a JSON object")
    return request


# the service process ------------------------------------------------------------------------

def run_service(state_dir, stop):
    """Answer requests until stop (threading.Event) is set; writes provisioning.ready."""
    cloud = Cloud.from_state(state_dir)
    registry = Registry(cloud.registry_path)
    prov = Provisioner(cloud.ca, registry, parse_validity(cloud.cert_validity), cloud.templates,
                       cloud.fault, cloud.csr_rate, cloud.csr_burst,
                       parse_validity(cloud.pending_ttl))
    inbox, subscribed = queue.Queue(), threading.Event()
    topics = [(FROM + "#", 1), (ROTATION_TOPIC, 1)]
    # next to the broker: trusts the server certificate it was configured with, whatever signed it
    client = cloud.admin_client(SERVICE_CLIENT_ID, internal=True)
    client.on_message = lambda c, u, m: inbox.put((m.topic, m.payload))
    client.on_subscribe = lambda *a: subscribed.set()
    # paho reconnects by itself; subscribe again each time (clean session)
    client.on_connect = lambda c, u, f, rc, p: None if rc.is_failure else c.subscribe(topics)
    client.subscribe(topics)
    if not subscribed.wait(10):
        raise ProvisioningError(f"no SUBACK for {FROM}# and {ROTATION_TOPIC} from the broker "
                                "within 10 s")
    log.info("ready: templates %s, certificates valid %s%s", ", ".join(prov.templates),
             cloud.cert_validity, f"; FAULT {cloud.fault}" if cloud.fault else "")
    # after the log line: whoever waits for this file may read the log at once
    write_private(Path(state_dir) / "provisioning.ready", f"{os.getpid()}\n")
    notified, swept = {}, 0.0
    try:
        while not stop.is_set():
            replies, changed = [], False
            if time.monotonic() - swept >= _SWEEP_S:
                swept = time.monotonic()
                try:
                    changed = prov.expire()
                except UpcertError as e:
                    log.error("expired certificates not deleted: %s", e)
            for topic, payload in _drain(inbox):
                try:
                    out, c = prov.handle(topic, payload)
                except Exception:  # a bug answering one request must not stop the service
                    log.exception("request on %s failed", topic)
                    continue
                replies += out
                changed |= c
            if changed:  # before the replies: a new certificate is refused until provisioned
                try:
                    cloud.enforce(registry)
                except UpcertError as e:
                    log.error("certificate status not enforced: %s", e)
            for topic, data in replies:
                client.publish(topic, data, qos=1)
            try:
                _notify_next(client, registry, notified)
            except UpcertError as e:
                log.error("notify-next not sent: %s", e)
    finally:
        client.disconnect()
        client.loop_stop()
        registry.close()


def _drain(inbox):
    try:
        batch = [inbox.get(timeout=_POLL_S)]
    except queue.Empty:
        return []
    while len(batch) < _BATCH:
        try:
            batch.append(inbox.get_nowait())
        except queue.Empty:
            break
    return batch


def _notify_next(client, registry, notified):
    """Publish notify-next for each thing whose next pending job changed (AWS semantics)."""
    pending = registry.next_jobs()
    for thing in set(pending) | set(notified):
        job = pending.get(thing)
        job_id = job["job_id"] if job else None
        if notified.get(thing) != job_id:
            event = json.dumps(jobs.notify_next(job)).encode()
            client.publish(f"{TO}{thing}/{jobs.prefix(thing)}notify-next", event, qos=1)
            notified[thing] = job_id


def main(argv=None):
    """`python -m upcert.cloud.service --state DIR`: run until SIGTERM."""
    ap = argparse.ArgumentParser(prog="python -m upcert.cloud.service", description=__doc__)
    ap.add_argument("--state", required=True, help="the local cloud's folder (with cloud.json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: stop.set())
    try:
        run_service(Path(args.state), stop)
    except UpcertError as e:
        log.error("%s", e)
        return 1
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
