"""Against a real AWS account: the sequence of the README's "Real AWS" section, on an emulated
board. It runs only when UPCERT_AWS_TEST_REGION is set and boto3 finds credentials (environment,
profile, SSO); otherwise it is skipped with the reason, also under CI=true. This is the one
exception to "a missing component fails under CI": an AWS account and its credentials are not
something CI or a developer's machine can install, and the test costs money (a few cents) and
leaves a thing behind only if it fails halfway (named upcert-test-*, deleted when it ends).

UPCERT_AWS_TEST_ROLE_ARN (optional): a provisioning role to use instead of `--create-role`."""

import json
import os
import time

import pytest
from upcert import cli

REGION = os.environ.get("UPCERT_AWS_TEST_REGION")


def _credentials():
    try:
        import boto3

        return boto3.Session(region_name=REGION).get_credentials() is not None
    except Exception:  # no boto3 config at all
        return False


pytestmark = pytest.mark.skipif(
    not REGION or not _credentials(),
    reason="real AWS: set UPCERT_AWS_TEST_REGION and AWS credentials boto3 can find (skipped "
           "under CI too: no account there)")


def _upcert(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def test_real_aws_sequence(board_factory, capsys, monkeypatch, tmp_path):
    import boto3

    monkeypatch.setenv("UPCERT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("UPCERT_WIFI_PASSWORD", "unused-by-the-emulated-board")
    thing = f"upcert-test-{int(time.time())}-{os.urandom(2).hex()}"
    role = os.environ.get("UPCERT_AWS_TEST_ROLE_ARN")
    iot = boto3.Session(region_name=REGION).client("iot")
    board = board_factory()
    try:
        # 1. aws setup (twice: the second changes nothing)
        _upcert(capsys, "aws", "setup", "--region", REGION,
                *(("--role-arn", role) if role else ("--create-role",)))
        assert "nothing to change" in _upcert(capsys, "aws", "setup", "--region", REGION,
                                              *(("--role-arn", role) if role else ()))
        # 2. provision --aws: key and CSR on the board, CreateCertificateFromCsr, checked
        out = _upcert(capsys, "provision", "--aws", "--region", REGION, "--thing", thing,
                      "--port", board.port, "--wifi-ssid", "upcert-lab")
        first = out.split("certificate id ")[1].split()[0]
        # 3. the agent connects to the account's endpoint with Amazon's roots
        board.wait_for_line("upcert: connected TLS 1.2", timeout_s=120)
        # 4. rotate --aws: a real AWS IoT Job; the board rotates over Fleet Provisioning with
        #    the rotation template
        _upcert(capsys, "rotate", "--region", REGION, "--aws", "--thing", thing)
        board.wait_for_line("upcert: rotation: done", timeout_s=300)
        # 5. certs list --aws: the new certificate ACTIVE on the thing
        rows = json.loads(_upcert(capsys, "certs", "list", "--aws", "--region", REGION,
                                  "--json"))
        mine = [r for r in rows if r["thing"] == thing]
        assert any(r["status"] == "ACTIVE" and r["cert_id"] != first for r in mine), mine
    finally:
        _cleanup(iot, thing)


def _cleanup(iot, thing):
    # best effort: the thing and its certificates go
    try:
        for arn in iot.list_thing_principals(thingName=thing)["principals"]:
            iot.detach_thing_principal(thingName=thing, principal=arn)
            cid = arn.rsplit("/", 1)[1]
            for p in iot.list_attached_policies(target=arn)["policies"]:
                iot.detach_policy(policyName=p["policyName"], target=arn)
            iot.update_certificate(certificateId=cid, newStatus="INACTIVE")
            iot.delete_certificate(certificateId=cid)
        iot.delete_thing(thingName=thing)
    except Exception as e:  # noqa: BLE001 (reported, never hides the test's own failure)
        print(f"cleanup of {thing} incomplete: {e}")
