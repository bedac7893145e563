"""The link's hardening end to end (issue #11, items 5-8): an emulated board at its default heap,
on the real mosquitto stand-in, answers a 60 KB command without losing its link, answers each of
200 quick commands once, keeps its telemetry going, and answers REJECTED once a job whose
document it cannot hold, then runs the rotation job queued after it."""

import json
import time

from tests.e2e.conftest import telemetry_config


def _provision(board, cloud, ca, thing):
    # A local-CA identity, registered ACTIVE in the stand-in's registry (a rotation retires it).
    from upcert.board import provision as prov
    from upcert.cloud.registry import Registry

    cfg = telemetry_config(thing, cloud)
    cert, key, roots = prov.local_credentials(ca.directory, thing)
    Registry(cloud.registry_path).register(cert, thing)
    return prov.provision(board.port, cfg, cert, key, roots, log=lambda m: None)


def _log(board, since):
    return board.log_path.read_bytes()[since:].decode("utf-8", "replace")


def test_big_command_and_burst_answered_telemetry_goes_on(board_factory, cloud, ca, thing):
    from upcert.cloud.standin import Subscription

    board = board_factory()
    sub = Subscription(cloud, f"things/{thing}/#")
    try:
        _provision(board, cloud, ca, thing)
        mark = board.log_size()
        board.wait_for_line("upcert: published telemetry", timeout_s=60)
        cmd = f"things/{thing}/commands"
        pad = "x" * 60000
        sub.client.publish(cmd, json.dumps({"id": "big", "cmd": "ping", "pad": pad}), qos=1)
        for i in range(200):
            sub.client.publish(cmd, json.dumps({"cmd": "ping", "id": f"q{i}"}), qos=1)
        sent = time.monotonic()
        want = {"big"} | {f"q{i}" for i in range(200)}
        got = {}
        while set(got) != want:
            m = sub.wait_for(lambda m: m.topic.endswith("/replies"), timeout_s=20)
            r = json.loads(m.payload)
            assert r["id"] not in got, f"two replies for {r['id']}"
            got[r["id"]] = r
        n = len(json.dumps({"id": "big", "cmd": "ping", "pad": pad}))
        assert got["big"] == {"id": "big", "ok": False,
                              "error": f"command too large: {n} bytes > 4096"}
        ok = [r for k, r in got.items() if k != "big" and r["ok"]]
        busy = [r for k, r in got.items() if k != "big" and not r["ok"]]
        assert ok, "some commands answered in full"
        assert all(r["error"] == "busy: too many commands, retry" for r in busy), busy[:3]
        # Telemetry goes on over the same link.
        seq = json.loads(sub.wait_for(lambda m: m.topic.endswith("/telemetry")
                                      and m.timestamp > sent, timeout_s=10).payload)["seq"]
        body = json.loads(sub.wait_for(lambda m: m.topic.endswith("/telemetry")
                                       and json.loads(m.payload)["seq"] > seq,
                                       timeout_s=10).payload)
        assert body["thing"] == thing
    finally:
        sub.close()
    log = _log(board, mark)
    assert "link lost" not in log and "connection failed" not in log, log[-2000:]
    assert log.count("upcert: connected") == 1


def test_job_too_large_rejected_once_then_rotation_job_runs(board_factory, cloud, ca, thing):
    from upcert.cloud.registry import Registry

    board = board_factory()
    reg = Registry(cloud.registry_path)
    _provision(board, cloud, ca, thing)
    board.wait_for_line("upcert: published telemetry", timeout_s=60)
    mark = board.log_size()
    reg.create_job(thing, {"operation": "rotate-certificate", "note": "x" * 30000}, "huge-1")
    reg.create_job(thing, {"operation": "rotate-certificate"}, "rot-1")
    line = board.wait_for_line("upcert: job huge-1 REJECTED", timeout_s=30, since=mark)
    assert "job document too large: " in line and " bytes > 4096" in line
    board.wait_for_line("upcert: job rot-1 SUCCEEDED", timeout_s=60, since=mark)
    huge = reg.get_job("huge-1")
    assert huge["status"] == "REJECTED"
    assert huge["status_details"]["reason"].startswith("job document too large: ")
    log = _log(board, mark)
    assert log.count("huge-1 REJECTED") == 1, log
    assert "link lost" not in log, log[-2000:]
