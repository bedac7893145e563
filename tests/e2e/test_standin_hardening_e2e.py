"""The stand-in's hardening as an emulated board sees it: another thing's certificate cannot take
the board's client id and knock it offline, and after the stand-in crashed `upcert cloud up`
brings it back on the port the board keeps dialling."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import telemetry_config
from tests.tools import require_plugin_build, wait_until


def _provision(board, cloud, ca, thing):
    from upcert.board import provision as prov

    cert, key, roots = prov.local_credentials(ca.directory, thing)
    return prov.provision(board.port, telemetry_config(thing, cloud), cert, key, roots,
                          log=lambda m: None)


def test_another_things_certificate_cannot_knock_the_board_offline(board_factory, cloud, ca,
                                                                   thing, tmp_path):
    from upcert.cloud.standin import CloudError, Subscription
    from upcert.pki import certs

    board = board_factory()
    _provision(board, cloud, ca, thing)
    board.wait_for_line("upcert: connected", timeout_s=60)
    key = certs.generate_key("ec")
    certfile, keyfile = tmp_path / "other.pem", tmp_path / "other.key"
    certs.write_private_key(keyfile, key)
    certs.write_certificate(certfile, ca.issue_device(thing + "-x", key.public_key()))
    with Subscription(cloud, f"things/{thing}/telemetry") as sub:
        # the agent of the last boot reports (provisioning's own boots are interrupted at once)
        seq = json.loads(sub.wait_for(lambda m: json.loads(m.payload)["seq"] >= 2,
                                      timeout_s=30).payload)["seq"]
        line = f"upcert: published telemetry seq={seq}\n"
        board.wait_for_log(line, timeout_s=10)
        log = board.log_path.read_bytes()
        mark = log.rindex(line.encode()) + len(line)
        try:
            intruder = cloud.client(thing, certfile, keyfile)  # the board's client id
        except CloudError as e:
            refusal = str(e)
        else:
            intruder.disconnect()
            intruder.loop_stop()
            refusal = "accepted"
        # two more reports (every 2 s): a board knocked offline reconnects before them
        for _ in range(2):
            sub.wait_for(timeout_s=30)
    since = board.log_path.read_bytes()[mark:].decode(errors="replace")
    assert not re.search(r"upcert: (link lost|connection failed|connected)", since), repr(since)
    assert "Not authorized" in refusal, refusal


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (OSError, IndexError):
        return False


def test_board_is_back_after_a_crash_and_cloud_up(board_factory, ca, thing, tmp_path):
    from upcert.cloud.standin import Cloud, Subscription

    require_plugin_build()  # `cloud up` builds the identity plugin
    state = tmp_path / "cloud"

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "upcert.cli", "cloud", *args, "--dir",
                              str(state), "--ca-dir", str(ca.directory)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    cli("up")
    pids = [int((state / n).read_text()) for n in ("mosquitto.pid", "provisioning.pid")]
    try:
        cloud = Cloud.load(state, ca)
        board = board_factory()
        _provision(board, cloud, ca, thing)
        board.wait_for_line("upcert: connected", timeout_s=60)
        mark = board.log_size()
        for pid in pids:  # the crash: broker and service killed
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(map(_alive, pids)), 5, "the killed broker and service gone")
        board.wait_for_line("upcert: (link lost|connection failed)", timeout_s=60, since=mark)
        assert f"cloud up: mqtts://localhost:{cloud.port} " in cli("up")
        pids += [int((state / n).read_text()) for n in ("mosquitto.pid", "provisioning.pid")]
        board.wait_for_line("upcert: connected", timeout_s=60, since=mark)
        with Subscription(Cloud.load(state, ca), f"things/{thing}/telemetry") as sub:
            sub.wait_for(timeout_s=30)
    finally:
        subprocess.run([sys.executable, "-m", "upcert.cli", "cloud", "down", "--dir", str(state),
                        "--ca-dir", str(ca.directory)], capture_output=True, timeout=60)
        for pid in pids:  # whatever an old stand-in left behind
            try:
                if _alive(pid) and str(state).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_a_things_identity_is_refused_on_another_things_topics(board_factory, cloud, ca, thing):
    # The stand-in's ACL is generated from the device policy `upcert aws setup` gives AWS
    # (upcert.policy): a board with thing A's certificate, told to publish its telemetry on
    # thing B's topic and to take B's commands, gets neither. Its publishes are acknowledged
    # and dropped (mosquitto; AWS disconnects instead); a marker the host publishes after the
    # board's acknowledged report arrives alone.
    from upcert.board import provision as prov
    from upcert.cloud.standin import Subscription

    other = thing + "-b"
    cfg = telemetry_config(thing, cloud)
    cfg["topics"] = {"telemetry": f"things/{other}/telemetry",
                     "commands": f"things/{other}/commands", "replies": f"things/{other}/replies"}
    cert, key, roots = prov.local_credentials(ca.directory, thing)
    board = board_factory()
    with Subscription(cloud, f"things/{other}/#") as sub:
        prov.provision(board.port, cfg, cert, key, roots, log=lambda m: None)
        board.wait_for_line("upcert: published telemetry seq=2", timeout_s=60)
        sub.client.publish(f"things/{other}/commands", json.dumps({"cmd": "ping", "id": "x"}),
                           qos=1).wait_for_publish(5)
        board.wait_for_line("upcert: published telemetry seq=3", timeout_s=30)
        sub.client.publish(f"things/{other}/marker", b"", qos=1).wait_for_publish(5)
        sub.wait_for(lambda m: m.topic.endswith("/marker"), timeout_s=10)
    # the command (the host's own) and the marker; no telemetry, no reply from the board
    assert [m.topic for m in sub.messages] == [f"things/{other}/commands",
                                               f"things/{other}/marker"]
    assert "ping" not in board.log_path.read_text(errors="replace")
