"""Provision an emulated board through mpremote, then watch its agent on the real broker."""

import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import telemetry_config
from tests.tools import require


def _provision(board, cloud, ca, thing, store="fs", **kw):
    from upcert.board import provision as prov

    cfg = telemetry_config(thing, cloud, store, **kw)
    cert, key, roots = prov.local_credentials(ca.directory, thing)
    return prov.provision(board.port, cfg, cert, key, roots, log=lambda m: None)


@pytest.mark.parametrize("store", ["fs", "nvs"])
def test_provision_connect_publish_and_ping(board_factory, cloud, ca, thing, store):
    from upcert.board.provision import status
    from upcert.cloud.standin import Subscription

    board = board_factory()
    sub = Subscription(cloud, f"things/{thing}/#")
    try:
        res = _provision(board, cloud, ca, thing, store)
        assert len(res.cert_id) == 64 and res.issuer_check == "verified"
        line = board.wait_for_line("upcert: connected", timeout_s=60)
        assert "TLS 1.2" in line and res.cert_id[:16] in line
        msg = sub.wait_for(lambda m: m.topic == f"things/{thing}/telemetry", timeout_s=30)
        body = json.loads(msg.payload)
        assert body["thing"] == thing and body["cert_id"] == res.cert_id
        assert 300 < body["days_left"] <= 365 and body["free_heap"] > 0
        sub.client.publish(f"things/{thing}/commands",
                           json.dumps({"cmd": "ping", "id": "p1"}), qos=1)
        reply = sub.wait_for(lambda m: m.topic == f"things/{thing}/replies", timeout_s=30)
        assert json.loads(reply.payload)["id"] == "p1" and json.loads(reply.payload)["ok"]
        sub.client.publish(f"things/{thing}/commands", b"{not json", qos=1)
        bad = sub.wait_for(lambda m: m.topic == f"things/{thing}/replies"
                           and not json.loads(m.payload).get("ok"), timeout_s=30)
        assert "error" in json.loads(bad.payload)
    finally:
        sub.close()
    # The board answers mpremote while the agent runs (Ctrl-C interrupts main.py), then the
    # status command soft-reboots it and the agent goes back to work.
    mark = board.log_size()
    st = status(board.port)
    assert st["thing"] == thing and st["cert_id"] == res.cert_id
    assert st["store"]["kind"] == store
    board.wait_for_line("upcert: connected", timeout_s=60, since=mark)


def test_cli_provision_and_status(board_factory, cloud, ca, thing, tmp_path):
    board = board_factory()
    cmd = [sys.executable, "-m", "upcert.cli"]
    out = subprocess.run(
        cmd + ["provision", "--port", board.port, "--thing", thing, "--endpoint",
               f"localhost:{cloud.port}", "--ca-dir", str(ca.directory), "--no-reset", "--no-wifi"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "certificate id" in out.stdout
    assert "PRIVATE KEY" not in out.stdout + out.stderr
    st = subprocess.run(cmd + ["board", "status", "--port", board.port],
                        capture_output=True, text=True, timeout=60)
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["thing"] == thing


def test_unmodified_mpremote_sees_the_provisioned_files(board_factory, cloud, ca, thing):
    mpremote = require("mpremote")
    board = board_factory()
    _provision(board, cloud, ca, thing)
    board.wait_for_line("upcert: connected", timeout_s=60)
    ls = subprocess.run([mpremote, "connect", board.port, "fs", "ls", "/upcert.d"],
                        capture_output=True, text=True, timeout=60)
    assert ls.returncode == 0, ls.stderr
    for name in ("config.json", "roots.der", "cert.der", "key.der"):
        assert name in ls.stdout


def test_broker_restart_agent_reconnects(board_factory, cloud, ca, thing):
    from upcert.cloud.standin import Subscription

    board = board_factory()
    _provision(board, cloud, ca, thing)
    board.wait_for_line("upcert: connected", timeout_s=60)
    mark = board.log_size()
    cloud.restart()
    board.wait_for_line("upcert: link lost|upcert: connection failed", timeout_s=90, since=mark)
    board.wait_for_line("upcert: connected", timeout_s=90, since=mark)
    sub = Subscription(cloud, f"things/{thing}/telemetry")
    try:
        msg = sub.wait_for(lambda m: True, timeout_s=30)
        assert json.loads(msg.payload)["thing"] == thing
    finally:
        sub.close()


def test_two_boards_at_once(board_factory, cloud, ca, thing):
    from upcert.cloud.standin import Subscription

    a, b = board_factory(), board_factory()
    _provision(a, cloud, ca, thing + "a")
    _provision(b, cloud, ca, thing + "b")
    for brd in (a, b):
        brd.wait_for_line("upcert: connected", timeout_s=60)
    # Both at once: telemetry from each, sent after both were connected, and neither link
    # dropped meanwhile (one board's connection must not end the other's).
    marks = [brd.log_size() for brd in (a, b)]
    with Subscription(cloud, "things/+/telemetry") as sub:
        for name in (thing + "a", thing + "b"):
            sub.wait_for(lambda m, name=name: json.loads(m.payload)["thing"] == name,
                         timeout_s=30)
    for brd, mark in zip((a, b), marks, strict=True):
        since = brd.log_since(mark)
        assert "link lost" not in since and "connection failed" not in since, since
