"""What the CLI does to the local stand-in's registry: list and set certificate status, queue a
rotation job, and check a certificate before a board is written with it."""

import json
from pathlib import Path

from upcert import policy
from upcert.cloud.registry import Registry
from upcert.cloud.standin import Cloud
from upcert.errors import UpcertError
from upcert.pki.certs import cert_id
from upcert.validate import InputError


class AdminError(UpcertError):
    """The local stand-in's registry cannot be read or changed."""


def _registry(state_dir):
    path = Path(state_dir) / "cloud.json"
    try:
        return Registry(json.loads(path.read_text()).get("registry")
                        or Path(state_dir) / "registry.sqlite3")
    except FileNotFoundError:
        raise AdminError(f"no local cloud in {state_dir}: run `upcert cloud up`") from None
    except (ValueError, AttributeError):
        raise AdminError(f"{path} is corrupt: run `upcert cloud up` again") from None


def list_certificates(state_dir):
    """Every certificate in the local cloud's registry (dicts, oldest first)."""
    return _registry(state_dir).list()


def set_certificate_status(state_dir, cert_id, status):
    """Set ACTIVE, INACTIVE or REVOKED (id or unique prefix); rewrites the CRL, and a running
    broker refuses or disconnects the certificate at once. The updated record."""
    cloud = Cloud.from_state(state_dir)
    if not cloud.services:
        raise AdminError(f"the local cloud in {state_dir} runs without services, so it "
                                "enforces no status: `upcert cloud down`, then `upcert cloud up`")
    registry = Registry(cloud.registry_path)
    record = registry.set_status(cert_id, status)
    cloud.enforce(registry)
    return record


def create_rotation_job(state_dir, thing):
    """Queue a job {"operation": "rotate-certificate"} for thing; its job id. The service sends
    notify-next to the thing within a fraction of a second (at its next start if it is down)."""
    return _registry(state_dir).create_job(thing, dict(policy.ROTATE_DOCUMENT),
                                           job_id=policy.rotation_job_id(thing))


def registry_state(cloud_dir, cert, thing):
    """Before a board is written: what the local stand-in's registry in cloud_dir knows of
    `cert`. None: no stand-in there; "new": register it afterwards; "active": already
    registered ACTIVE for this thing (nothing to add). A certificate registered for another
    thing, or not ACTIVE, is refused."""
    if not (Path(cloud_dir) / "cloud.json").exists():
        return None
    cid = cert_id(cert)
    rec = Registry(Cloud.from_state(cloud_dir).registry_path).get(cid)
    if rec is None:
        return "new"
    where = f"the local stand-in's registry ({cloud_dir})"
    if rec["thing"] != thing:
        raise InputError(f"certificate {cid[:16]} is already in {where} for thing "
                         f"{rec['thing']!r}, not {thing!r}: use --thing {rec['thing']}, or a "
                         "certificate of this thing's own")
    if rec["status"] == "REVOKED":
        raise InputError(f"certificate {cid[:16]} is REVOKED in {where}, for good: issue a new "
                         "certificate (or provision without --cert/--key for the local CA)")
    if rec["status"] != "ACTIVE":
        raise InputError(f"certificate {cid[:16]} is {rec['status']} in {where}, so the broker "
                         f"refuses it: `upcert certs activate {cid[:16]}` first, or use a new "
                         "certificate")
    return "active"
