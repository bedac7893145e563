"""Certificate rotation end to end: an emulated board renews its identity over the Fleet
Provisioning MQTT API of the local stand-in, by expiry, by an AWS IoT Job and by a command."""

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "upcert.cli"]
FAST = {"telemetry_interval_s": 2, "keepalive_s": 30}
# The boards run at the emulated board's default heap (an ESP32's grown heap in 64-bit terms,
# boards/unix/README.md), except the one that must run out of memory: 92K to 96K ran the agent
# and failed the rotation cleanly, 98K completed it, 88K cannot provision and 90K lost the job's
# report (measured 2026-12-02 once the certificate reader and the checks' code stopped sharing
# the heap; it was 98K before, then 96K): 94K, the middle.
SMALL_HEAP = os.environ.get("UPCERT_E2E_HEAP_SMALL", "94K")


def _provision(board, cloud, ca, thing, store="fs", minutes=None, renew=None, fleet=None):
    """Provision a local-CA identity, registered ACTIVE in the stand-in's registry."""
    from upcert.board import provision as prov
    from upcert.cloud.registry import Registry
    from upcert.pki import certs

    extra = dict(FAST)
    extra["renew"] = renew or {"days": 30, "fraction": 0.2, "jitter_s": 0}
    if fleet:
        extra["fleet"] = fleet
    cfg = prov.make_config(thing, f"localhost:{cloud.port}", store, extra,
                           wifi=("upcert-lab", "pw"))
    key = certs.generate_key("ec")
    now = dt.datetime.now(dt.timezone.utc)
    if minutes:
        cert = ca.issue_device(thing, key.public_key(), not_before=now - dt.timedelta(minutes=1),
                               not_after=now + dt.timedelta(minutes=minutes))
    else:
        cert = ca.issue_device(thing, key.public_key())
    Registry(cloud.registry_path).register(cert, thing)
    res = prov.provision(board.port, cfg, cert, key, [ca.certificate], log=lambda m: None)
    return res.cert_id


def _thing_certs(cloud, thing):
    from upcert.cloud.registry import Registry

    return {r["cert_id"]: r["status"] for r in Registry(cloud.registry_path).list(thing)}


def _telemetry_cert(cloud, thing, not_id, timeout_s=60):
    from upcert.cloud.standin import Subscription

    with Subscription(cloud, f"things/{thing}/telemetry") as sub:
        msg = sub.wait_for(lambda m: json.loads(m.payload)["cert_id"] != not_id,
                           timeout_s=timeout_s)
    return json.loads(msg.payload)


@pytest.mark.parametrize("store", ["fs", "nvs"])
def test_rotation_by_expiry(board_factory, cloud, ca, thing, store):
    board = board_factory()
    # 10 minutes left, renew under a day left: due at once (no jitter).
    old = _provision(board, cloud, ca, thing, store, minutes=10,
                     renew={"days": 1, "fraction": 0.2, "jitter_s": 0})
    board.wait_for_line("upcert: rotation: due", timeout_s=60)
    for step in ("new P-256 key", "CSR for CN=" + thing, "issued", "checks passed", "staged",
                 "trial connection", "committed certificate"):
        board.wait_for_line("upcert: rotation: .*" + step, timeout_s=60)
    done = board.wait_for_line("upcert: rotation: done", timeout_s=60)
    body = _telemetry_cert(cloud, thing, old)
    new = body["cert_id"]
    assert new[:16] in done and new != old
    status = _thing_certs(cloud, thing)
    assert status[new] == "ACTIVE"
    # No job to report to: once the new identity is proven the board's rotation-done event
    # retires the old certificate
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    while status[old] != "INACTIVE" and dt.datetime.now() < deadline:
        status = _thing_certs(cloud, thing)
    assert status[old] == "INACTIVE" and status[new] == "ACTIVE"
    # The new identity survives a reboot: the flip was committed to the store.
    mark = board.log_size()
    board.power_cut()
    line = board.wait_for_line("upcert: connected", timeout_s=60, since=mark)
    assert new[:16] in line


def test_rotation_by_job_retires_the_old_certificate(board_factory, cloud, ca, thing):
    board = board_factory()
    old = _provision(board, cloud, ca, thing)
    board.wait_for_line("upcert: connected", timeout_s=60)
    out = subprocess.run(CLI + ["rotate", "--thing", thing, "--dir", str(cloud.state_dir)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    board.wait_for_line("upcert: rotation: done", timeout_s=90)
    board.wait_for_line("upcert: job .* SUCCEEDED", timeout_s=60)
    new = _telemetry_cert(cloud, thing, old)["cert_id"]
    status = _thing_certs(cloud, thing)
    assert status[new] == "ACTIVE"
    deadline = dt.datetime.now() + dt.timedelta(seconds=20)
    while status[old] != "INACTIVE" and dt.datetime.now() < deadline:
        status = _thing_certs(cloud, thing)
    assert status[old] == "INACTIVE"  # only after the device reported success


def test_rotation_by_command(board_factory, cloud, ca, thing):
    from upcert.cloud.standin import Subscription

    board = board_factory()
    old = _provision(board, cloud, ca, thing)
    board.wait_for_line("upcert: connected", timeout_s=60)
    with Subscription(cloud, f"things/{thing}/replies") as sub:
        sub.client.publish(f"things/{thing}/commands",
                           json.dumps({"cmd": "rotate", "id": "r1"}), qos=1)
        reply = json.loads(sub.wait_for(timeout_s=30).payload)
    assert reply["id"] == "r1" and reply["ok"]
    board.wait_for_line("upcert: rotation: done", timeout_s=90)
    assert _telemetry_cert(cloud, thing, old)["cert_id"] != old


def test_rejected_rotation_keeps_the_old_identity(board_factory, cloud, ca, thing):
    board = board_factory()
    old = _provision(board, cloud, ca, thing, minutes=10,
                     renew={"days": 1, "fraction": 0.2, "jitter_s": 0},
                     fleet={"template": "no-such-template"})
    line = board.wait_for_line("upcert: rotation: failed", timeout_s=90)
    assert "no-such-template" in line or "ResourceNotFound" in line or "404" in line
    body = _telemetry_cert(cloud, thing, "-", timeout_s=30)
    assert body["cert_id"] == old and body["rotation"].startswith("failed")


def test_board_too_small_fails_cleanly_then_rotates_with_room(board_factory, cloud, ca, thing):
    # A board whose heap cannot hold a rotation: the rotation runs out of memory and says so
    # (failed:memory in the log, the telemetry and the job), the old identity and its telemetry
    # go on, nothing stays staged. The same board (its flash kept) with the default heap then
    # rotates.
    from upcert.cloud.registry import Registry
    from upcert.emu.board import EmulatedBoard

    board = board_factory(heapsize=SMALL_HEAP)
    old = _provision(board, cloud, ca, thing)
    board.wait_for_line("upcert: connected", timeout_s=60)
    out = subprocess.run(CLI + ["rotate", "--thing", thing, "--dir", str(cloud.state_dir)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = board.wait_for_line("upcert: rotation: failed at memory: out of memory at ",
                               timeout_s=90)
    assert "; retry in " in line, line
    board.wait_for_line(r"upcert: job \S+ FAILED(?! not reported)", timeout_s=60)  # reported
    body = _telemetry_cert(cloud, thing, "-", timeout_s=30)
    assert (body["cert_id"], body["rotation"]) == (old, "failed:memory"), body
    jobs = Registry(cloud.registry_path).list_jobs(thing)
    assert [(j["status"], j["status_details"]["step"]) for j in jobs] == [("FAILED", "memory")]
    assert _thing_certs(cloud, thing)[old] == "ACTIVE"
    # Telemetry goes on after the failure.
    mark = board.log_size()
    board.wait_for_line("upcert: published telemetry", timeout_s=30, since=mark)
    board.stop()
    roomy = EmulatedBoard(board.state_dir, heapsize="156K")  # the default, written back
    roomy.start()
    try:
        out = subprocess.run(CLI + ["rotate", "--thing", thing, "--dir", str(cloud.state_dir)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        roomy.wait_for_line("upcert: rotation: done", timeout_s=120)
        assert _telemetry_cert(cloud, thing, old)["cert_id"] != old
    finally:
        roomy.stop()
