"""A rotation that goes wrong, end to end: the stand-in's fault modes (upcert.cloud.faults) answer an
emulated board's CreateCertificateFromCsr badly; the board logs why, keeps its identity and its
telemetry, and backs off. (A revoked certificate refused by the broker at connect is in
test_registry_e2e.py; here the broker refuses a new certificate that is not ACTIVE at the trial.)
"""

import json
import re

import pytest

from tests.e2e.test_rotation_e2e import _provision

# Due at once (10 minutes left, renew under a day left, no jitter); replies awaited 5 s, not 30.
DUE = {"days": 1, "fraction": 0.2, "jitter_s": 0}
FLEET = {"timeout_s": 5}


@pytest.fixture(scope="module")
def fault_cloud(tmp_path_factory):
    """make(fault, key_type="rsa") -> a running Cloud (own local CA) with that fault mode."""
    from upcert.cloud.standin import Cloud
    from upcert.pki.ca import LocalCa

    from tests.tools import require_plugin_build

    require_plugin_build()
    clouds = {}

    def make(fault, key_type="rsa"):
        if (fault, key_type) not in clouds:
            ca = LocalCa.init(tmp_path_factory.mktemp(f"ca-{key_type}"), key_type=key_type)
            c = Cloud(tmp_path_factory.mktemp(f"cloud-{fault}"), ca, fault=fault)
            clouds[fault, key_type] = c.up()
        return clouds[fault, key_type]

    yield make
    for c in clouds.values():
        c.down()


def _start(board_factory, cloud, thing, fleet=None):
    """A board whose certificate is due for renewal at once; its old certificate id."""
    board = board_factory()
    old = _provision(board, cloud, cloud.ca, thing, minutes=10, renew=DUE,
                     fleet=dict(FLEET, **(fleet or {})))
    return board, old


def _kept(board, cloud, thing, old, step, timeout_s=30):
    """The rotation failed at step: the board logged it, committed nothing, and its telemetry
    still carries the old certificate with rotation state failed:<step>; that telemetry."""
    from upcert.cloud.standin import Subscription

    with Subscription(cloud, f"things/{thing}/telemetry") as sub:
        msg = sub.wait_for(lambda m: json.loads(m.payload).get("rotation", "").startswith(
            "failed"), timeout_s=timeout_s)
    body = json.loads(msg.payload)
    assert (body["cert_id"], body["rotation"]) == (old, "failed:" + step), body
    log = board.log_text()
    assert "upcert: rotation: committed" not in log and "rotation: done" not in log
    return body


def _statuses(cloud, thing):
    """{certificate id: status} of the thing's certificates in the stand-in's registry."""
    from upcert.cloud.registry import Registry

    return {r["cert_id"]: r["status"] for r in Registry(cloud.registry_path).list(thing)}


def _failure(board, step, timeout_s=60):
    line = board.wait_for_line(f"upcert: rotation: failed at {step}: ", timeout_s=timeout_s)
    assert re.search(r"; retry in \d+ s$", line), line  # backoff, not a tight loop
    return line


@pytest.mark.parametrize("fault, key_type, why", [
    ("wrong-key", "rsa", "issued certificate is not for our new key"),
    ("expired", "rsa", r"issued certificate valid \S+\.\.\S+, not now"),
    # an impostor CA with the local CA's name: its key identifier gives it away (RFC 5280
    # §4.2.1.1), for an RSA issuer (whose signature the device cannot check) as for an EC one
    ("other-issuer", "ec", "names issuer key [0-9a-f.]+, but trust anchor '[^']+' has key "),
    ("other-issuer", "rsa", "names issuer key [0-9a-f.]+, but trust anchor '[^']+' has key "),
])
def test_bad_certificate_refused_by_the_device(board_factory, fault_cloud, thing, fault,
                                               key_type, why):
    cloud = fault_cloud(fault, key_type)
    board, old = _start(board_factory, cloud, thing)
    line = _failure(board, "check")
    assert re.search(why, line), line
    assert "upcert: rotation: staged" not in board.log_text()  # refused before any flash write
    _kept(board, cloud, thing, old, "check")
    # Refused before RegisterThing: the certificate was never activated (and the device reports
    # it for retirement: the stand-in then sets it INACTIVE).
    assert "RegisterThing" not in board.log_text()
    status = _statuses(cloud, thing)
    assert status.pop(old) == "ACTIVE"
    assert status and set(status.values()) <= {"PENDING_ACTIVATION", "INACTIVE"}, status


def test_silent_service_times_out_and_telemetry_goes_on(board_factory, fault_cloud, thing):
    cloud = fault_cloud("silent")
    board, old = _start(board_factory, cloud, thing)
    line = _failure(board, "issue")
    assert "no reply to $aws/certificates/create-from-csr/json in 5000 ms" in line
    first = _kept(board, cloud, thing, old, "issue")
    later = _kept(board, cloud, thing, old, "issue")
    assert later["seq"] > first["seq"]
    assert len(re.findall("rotation: failed at", board.log_text())) == 1  # backing off


def test_reject_is_reported_with_aws_codes(board_factory, fault_cloud, thing):
    cloud = fault_cloud("reject")
    board, old = _start(board_factory, cloud, thing)
    line = _failure(board, "issue")
    assert "CreateCertificateFromCsr rejected: 400 InvalidCsr: rejected by the stand-in's fault" \
        in line, line
    _kept(board, cloud, thing, old, "issue")


def test_certificate_not_active_refused_by_the_broker_at_the_trial(board_factory, cloud, thing):
    # No RegisterThing (template null): AWS leaves the new certificate PENDING_ACTIVATION, and the
    # broker refuses it at the trial connection, as it refuses INACTIVE and REVOKED ones.
    board, old = _start(board_factory, cloud, thing, {"template": None})
    _failure(board, "trial")
    _kept(board, cloud, thing, old, "trial")
    status = _statuses(cloud, thing)
    assert status.pop(old) == "ACTIVE"
    assert len(status) == 1 and set(status.values()) <= {"PENDING_ACTIVATION", "INACTIVE"}, status
