"""The provisioning service of the local AWS IoT stand-in: answers devices' Fleet Provisioning
(create-from-csr, provision) and Jobs requests as the admin identity, and holds the functions the
CLI calls. Cloud.up() runs it in the background: `python -m upcert.provisioning --state <dir>`.
"""

import argparse
import datetime
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from . import jobs
from .certs import CertError, common_name
from .errors import UpcertError
from .faults import Fault
from .registry import Registry, TokenError

FROM, TO = "upcert/from/", "upcert/to/"  # topics of the identity plugin (plugin/*.c)
DEFAULT_TEMPLATE = "upcert-rotation"
SERVICE_CLIENT_ID = "upcert-provisioning"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CURVES = ("secp256r1", "secp384r1")
_POLL_S = 0.25  # how often new jobs are looked for (notify-next)
_BATCH = 200  # requests answered per CRL rewrite, at most
_procs = {}  # pid -> Popen of services this process started (reaped by stop_service)
log = logging.getLogger("upcert.provisioning")


class ProvisioningError(UpcertError):
    """The provisioning service cannot start or run, or a request to it cannot be done."""


class Rejection(Exception):
    """A request AWS would reject; becomes {"statusCode", "errorCode", "errorMessage"}."""

    def __init__(self, status_code, error_code, message):
        super().__init__(message)
        self.status_code, self.error_code = status_code, error_code


def parse_validity(text):
    """The timedelta of "90s", "10m", "12h" or "365d" (validity of the certificates issued)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", str(text))
    if not m or int(m[1]) == 0:
        raise ProvisioningError(f"certificate validity {text!r} is not valid: give a positive "
                                "number and a unit, e.g. 90s, 10m, 12h or 365d")
    return datetime.timedelta(seconds=int(m[1]) * _UNITS[m[2]])


class Provisioner:
    """Requests to replies, without MQTT: see handle(). ca signs, registry records; fault: a
    name of upcert.faults.FAULTS to bend CreateCertificateFromCsr answers (tests), or None."""

    def __init__(self, ca, registry, validity=datetime.timedelta(days=365),
                 templates=(DEFAULT_TEMPLATE,), fault=None):
        self.ca, self.registry = ca, registry
        self.validity, self.templates = validity, tuple(templates)
        self.fault = Fault(fault)

    def handle(self, topic, payload, now=None):
        """(replies [(topic, bytes)], changed) for a message on upcert/from/<thing>/<topic>;
        changed means a certificate status changed (the CRL must be rewritten)."""
        thing, _, aws = topic[len(FROM):].partition("/")
        parts = aws.split("/")
        if aws.startswith(jobs.prefix(thing)):
            out = jobs.handle(self.registry, thing, aws[len(jobs.prefix(thing)):], payload, now)
            changed = any(t.endswith("/update/accepted") for t, _ in out) and \
                self._retire(thing, payload)
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
        data = _cbor(body) if fmt == "cbor" else json.dumps(body).encode()
        return [(f"{TO}{thing}/{topic}{suffix}", data)], suffix == "/accepted"

    def _create_from_csr(self, thing, request):
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
            raise Rejection(403, "Forbidden", f"the CSR's subject CN {cn!r} is not your thing "
                            f"name {thing!r}: a device may renew only its own identity")
        now = datetime.datetime.now(datetime.timezone.utc)
        try:
            cert = self.fault.issue(self.ca, thing, key, now + self.validity, now)
        except CertError as e:
            raise Rejection(400, "InvalidCsr", str(e)) from None
        # AWS: a certificate made over MQTT is PENDING_ACTIVATION until RegisterThing
        record = self.registry.register(cert, thing, "PENDING_ACTIVATION")
        token = self.registry.issue_token(record["cert_id"])
        log.info("issued certificate %s for %s, valid until %s%s", record["cert_id"][:12], thing,
                 cert.not_valid_after_utc.isoformat(),
                 f" (fault {self.fault.name})" if self.fault.name else "")
        return {"certificateId": record["cert_id"], "certificatePem": record["pem"],
                "certificateOwnershipToken": token}

    def _provision(self, thing, template, request, now):
        if template not in self.templates:
            raise Rejection(404, "ResourceNotFound", f"provisioning template {template!r} does "
                            f"not exist: this stand-in offers {', '.join(self.templates)}")
        params = request.get("parameters", {})
        if not isinstance(params, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
            raise Rejection(400, "InvalidParameters", "parameters must map strings to strings")
        if params.get("ThingName", thing) != thing:
            raise Rejection(403, "Forbidden", f"ThingName {params['ThingName']!r} is not your "
                            f"thing {thing!r}: a device may provision only itself")
        try:
            record = self.registry.consume_token(request.get("certificateOwnershipToken"),
                                                 thing, now=now)
        except TokenError as e:
            raise Rejection(e.status_code, e.error_code, str(e)) from None
        log.info("certificate %s of %s is %s and attached", record["cert_id"][:12], thing,
                 record["status"])
        return {"deviceConfiguration": {}, "thingName": thing}


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


def _cbor(obj):
    """CBOR (RFC 8949 §3.1) of a dict of str to str/int: rejections on a .../cbor topic."""
    def head(major, n):
        if n < 24:
            return bytes([major << 5 | n])
        size = 1 if n < 0x100 else 2 if n < 0x10000 else 4
        return bytes([major << 5 | {1: 24, 2: 25, 4: 26}[size]]) + n.to_bytes(size, "big")

    if isinstance(obj, int):
        return head(0, obj) if obj >= 0 else head(1, -1 - obj)
    if isinstance(obj, str):
        return head(3, len(obj.encode())) + obj.encode()
    return head(5, len(obj)) + b"".join(_cbor(k) + _cbor(v) for k, v in obj.items())


# the service process ------------------------------------------------------------------------

def run_service(state_dir, stop):
    """Answer requests until stop (threading.Event) is set; writes provisioning.ready."""
    from .cloud import Cloud

    cloud = Cloud.from_state(state_dir)
    registry = Registry(cloud.registry_path)
    prov = Provisioner(cloud.ca, registry, parse_validity(cloud.cert_validity), cloud.templates,
                       cloud.fault)
    inbox, subscribed = queue.Queue(), threading.Event()
    # next to the broker: trusts the server certificate it was configured with, whatever signed it
    client = cloud.admin_client(SERVICE_CLIENT_ID, internal=True)
    client.on_message = lambda c, u, m: inbox.put((m.topic, m.payload))
    client.on_subscribe = lambda *a: subscribed.set()
    # paho reconnects by itself; subscribe again each time (clean session)
    client.on_connect = lambda c, u, f, rc, p: None if rc.is_failure else c.subscribe(FROM + "#", 1)
    client.subscribe(FROM + "#", 1)
    if not subscribed.wait(10):
        raise ProvisioningError(f"no SUBACK for {FROM}# from the broker within 10 s")
    (Path(state_dir) / "provisioning.ready").write_text(f"{os.getpid()}\n")
    log.info("ready: templates %s, certificates valid %s%s", ", ".join(prov.templates),
             cloud.cert_validity, f"; FAULT {cloud.fault}" if cloud.fault else "")
    notified = {}
    try:
        while not stop.is_set():
            replies, changed = [], False
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


def _pid_ok(state_dir, pid):
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return (st != "Z" and b"upcert.provisioning" in cmdline
            and str(Path(state_dir).resolve()).encode() in cmdline)


def _service_pid(state_dir):
    try:
        return int((Path(state_dir) / "provisioning.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def service_running(state_dir):
    """True while the provisioning service of state_dir runs."""
    pid = _service_pid(state_dir)
    return pid is not None and _pid_ok(Path(state_dir), pid)


def start_service(cloud, timeout_s=20):
    """Start the service for a running cloud; wait until it is subscribed; its pid."""
    state = cloud.state_dir.resolve()
    ready, log_path = state / "provisioning.ready", state / "provisioning.log"
    ready.unlink(missing_ok=True)
    offset = log_path.stat().st_size if log_path.exists() else 0
    here = str(Path(__file__).resolve().parents[1])  # so that `-m upcert...` finds this copy
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p))
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "upcert.provisioning", "--state", str(state)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    _procs[proc.pid] = proc
    (state / "provisioning.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready.exists():
            return proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop_service(state)
    with open(log_path, "rb") as f:
        f.seek(offset)
        tail = "\n".join(f.read().decode(errors="replace").splitlines()[-15:])
    why = f"exited with code {proc.returncode}" if proc.returncode is not None else \
        f"did not get ready within {timeout_s} s"
    raise ProvisioningError(f"the provisioning service {why} (log: {log_path}):\n{tail}")


def stop_service(state_dir, timeout_s=10):
    """Stop the service of state_dir (SIGTERM, then SIGKILL); nothing to do if stopped."""
    state = Path(state_dir)
    pid = _service_pid(state)
    if pid is not None and _pid_ok(state, pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _pid_ok(state, pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _pid_ok(state, pid):
            os.kill(pid, signal.SIGKILL)
    if pid in _procs:
        _procs.pop(pid).wait()
    for name in ("provisioning.pid", "provisioning.ready"):
        (state / name).unlink(missing_ok=True)


# for the CLI ----------------------------------------------------------------------------------

def _registry(state_dir):
    path = Path(state_dir) / "cloud.json"
    try:
        return Registry(json.loads(path.read_text()).get("registry")
                        or Path(state_dir) / "registry.sqlite3")
    except FileNotFoundError:
        raise ProvisioningError(f"no local cloud in {state_dir}: run `upcert cloud up`") from None
    except (ValueError, AttributeError):
        raise ProvisioningError(f"{path} is corrupt: run `upcert cloud up` again") from None


def list_certificates(state_dir):
    """Every certificate in the local cloud's registry (dicts, oldest first)."""
    return _registry(state_dir).list()


def set_certificate_status(state_dir, cert_id, status):
    """Set ACTIVE, INACTIVE or REVOKED (id or unique prefix); rewrites the CRL, and a running
    broker refuses or disconnects the certificate at once. The updated record."""
    from .cloud import Cloud

    cloud = Cloud.from_state(state_dir)
    if not cloud.services:
        raise ProvisioningError(f"the local cloud in {state_dir} runs without services, so it "
                                "enforces no status: `upcert cloud down`, then `upcert cloud up`")
    registry = Registry(cloud.registry_path)
    record = registry.set_status(cert_id, status)
    cloud.enforce(registry)
    return record


def create_rotation_job(state_dir, thing):
    """Queue a job {"operation": "rotate-certificate"} for thing; its job id. The service sends
    notify-next to the thing within a fraction of a second (at its next start if it is down)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    job_id = f"rotate-{str(thing).replace(':', '-')[:32]}-{stamp}-{os.urandom(2).hex()}"
    return _registry(state_dir).create_job(thing, dict(jobs.ROTATE_DOCUMENT), job_id=job_id)


def main(argv=None):
    """`python -m upcert.provisioning --state DIR`: run until SIGTERM."""
    ap = argparse.ArgumentParser(prog="python -m upcert.provisioning", description=__doc__)
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
