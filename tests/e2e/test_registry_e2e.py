"""The stand-in's registry acts like AWS's: a deactivated or revoked certificate is refused."""

import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "upcert.cli"]


@pytest.mark.parametrize("verb,status", [("deactivate", "INACTIVE"), ("revoke", "REVOKED")])
def test_status_change_disconnects_and_refuses(board_factory, cloud, ca, thing, verb, status):
    board = board_factory()
    out = subprocess.run(
        CLI + ["provision", "--port", board.port, "--thing", thing, "--endpoint",
               f"localhost:{cloud.port}", "--ca-dir", str(ca.directory), "--cloud-dir",
               str(cloud.state_dir), "--wifi-ssid", "lab", "--telemetry-interval", "2"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "registered in the local stand-in's registry" in out.stdout
    cert_id = out.stdout.split("certificate id ", 1)[1].split()[0]
    board.wait_for_line("upcert: connected", timeout_s=60)
    listed = subprocess.run(CLI + ["certs", "list", "--dir", str(cloud.state_dir)],
                            capture_output=True, text=True, timeout=60)
    assert cert_id[:16] in listed.stdout and "ACTIVE" in listed.stdout
    mark = board.log_size()
    done = subprocess.run(CLI + ["certs", verb, cert_id[:12], "--dir", str(cloud.state_dir)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert status in done.stdout
    # Kicked off, then refused at the handshake on every retry, with the diagnosis.
    board.wait_for_line("upcert: link lost|upcert: connection failed", timeout_s=60, since=mark)
    line = board.wait_for_line("upcert: connection failed", timeout_s=60, since=mark)
    assert "rejected our certificate" in line
    assert "upcert: connected" not in board.wait_for_log("upcert:", since=mark)
