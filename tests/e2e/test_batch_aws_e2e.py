"""`upcert batch --aws` on three emulated boards at once, AWS being moto (tests/aws_fakes.py) and
the MQTT part the local stand-in (as tests/e2e/test_aws_e2e.py): each board's key and CSR made
on the board; a first run that AWS answers wrongly (moto's certificate for another key) leaves
no certificate and every board as it was; the rerun provisions them; the boards connect with AWS's certificates; another rerun skips; then one board stopped before
activation is finished (made ACTIVE) and one holding another certificate than the recorded one
is rolled back on AWS (INACTIVE, detached) and made again."""

import json
import sqlite3

import boto3
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from upcert.pki import certs

from tests.aws_fakes import honour_csr
from tests.e2e.test_aws_e2e import _run
from tests.tools import require

TABLE_ROWS = ("fs", "nvs", "partition")


def _describe(cid):
    return boto3.client("iot").describe_certificate(certificateId=cid)["certificateDescription"]


def _der_id(cid):
    return certs.cert_id(x509.load_pem_x509_certificate(_describe(cid)["certificatePem"].encode()))


def test_batch_aws_three_boards_resume_with_rollback(account, board_factory, cloud, ca,
                                                     tmp_path, capsys):
    require("micropython")
    require("mpremote")
    from pathlib import Path

    from upcert.emu import config as emu_config

    # the settings `aws setup` wrote, pointed at the local stand-in for the MQTT part
    path = tmp_path / "home" / "aws" / "eu-west-1" / "aws.json"
    settings = json.loads(path.read_text())
    settings.update(endpoint="localhost", port=cloud.port, roots=str(ca.ca_pem))
    path.write_text(json.dumps(settings))
    table = Path(__file__).resolve().parents[2] / "boards" / "esp32_generic" / "partitions.csv"
    boards = [board_factory(), board_factory()]
    from upcert.emu.board import EmulatedBoard

    emu_config.use_table(tmp_path / "board-partition", table)  # the upcert data partition
    boards.append(EmulatedBoard(tmp_path / "board-partition"))
    boards[-1].start()
    try:
        _batch(account, boards, cloud, ca, tmp_path, capsys, settings, path)
    finally:
        boards[-1].stop()


def _batch(account, boards, cloud, ca, tmp_path, capsys, settings, path):
    from upcert.board.provision import held_certificate
    from upcert.factory.inventory import open_inventory

    things = [f"bta-{s}" for s in TABLE_ROWS]
    manifest = tmp_path / "batch.csv"
    manifest.write_text("target,thing,store,attributes,thing_type,thing_group\n" + "".join(
        f"{b.port},{t},{s},line=a;slot={i},sensor,line-a\n"
        for i, (b, t, s) in enumerate(zip(boards, things, TABLE_ROWS, strict=True))))
    inv_path, audit = tmp_path / "inv.sqlite", tmp_path / "audit.jsonl"
    argv = ["batch", "--aws", "--manifest", str(manifest), "--wifi-ssid", "lab",
            "--telemetry-interval", "2", "--inventory", str(inv_path), "--audit", str(audit),
            "--station", "st-aws", "--jobs", "3", "--json"]
    iot = boto3.client("iot")
    claim = settings["claim"]["certificate_id"]

    # 1. moto answers CreateCertificateFromCsr with a certificate for another key: refused on
    # every board, each certificate deleted, the rows left reserved (the boards unchanged).
    rc, out, err = _run(capsys, *argv)
    assert rc == 1, err
    res = {r["thing"]: r for r in json.loads(out)}
    assert {r["result"] for r in res.values()} == {"failed"}, res
    assert all("another public key than the board's CSR" in r["detail"] for r in res.values()), {
        t: r["detail"] for t, r in res.items()}
    assert [c["certificateId"] for c in iot.list_certificates()["certificates"]] == [claim]
    inv = open_inventory(inv_path)
    first = {r["thing"]: r for r in inv.rows()}
    # refused before AWS's answer was taken as issued: nothing recorded, nothing to roll back
    assert {(r["state"], r["cert_id"]) for r in first.values()} == {("reserved", None)}
    assert all(held_certificate(b.port) == "" for b in boards)

    # 2. AWS answers for the board's key: the rerun makes the reserved boards.
    honour_csr(account, ca)
    rc, out, err = _run(capsys, *argv)
    assert rc == 0, err
    res = {r["thing"]: r for r in json.loads(out)}
    assert {r["result"] for r in res.values()} == {"done"}, res
    recs = {r["thing"]: r for r in inv.rows()}
    for b, t in zip(boards, things, strict=True):
        r = recs[t]
        assert r["state"] == "done" and r["cert_id"] == res[t]["cert_id"]
        assert len(r["chip_id"]) == 12
        d = _describe(r["cert_id"])
        assert d["status"] == "ACTIVE"
        assert iot.list_thing_principals(thingName=t)["principals"] == [d["certificateArn"]]
        line = b.wait_for_line("upcert: connected", timeout_s=90)
        assert _der_id(r["cert_id"])[:16] in line  # the board connects with AWS's certificate
        desc = iot.describe_thing(thingName=t)
        assert desc["thingTypeName"] == "sensor" and desc["attributes"]["line"] == "a"
    assert [g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=things[0])[
        "thingGroups"]] == ["line-a"]

    # 3. A rerun redoes nothing.
    rc, out, err = _run(capsys, *argv)
    assert rc == 0 and {r["result"] for r in json.loads(out)} == {"skipped"}, err

    # 4. Half-done: bta-fs stopped after the board stored its certificate, before activation
    # (finished: ACTIVE); bta-nvs recorded with a certificate AWS issued that the board does not
    # hold (rolled back on AWS: INACTIVE, detached from thing and policy; made again).
    from upcert.aws import identity
    from upcert.aws.client import Aws

    aws = Aws(region="eu-west-1")
    key = certs.generate_key("ec")
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
        [x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "bta-nvs")]))
        .sign(key, hashes.SHA256()))
    stray = identity.certificate_from_csr(aws, csr)
    identity.attach(aws, stray, "bta-nvs", settings["device_policy"])
    identity.activate(aws, stray.certificate_id)
    iot.update_certificate(certificateId=recs["bta-fs"]["cert_id"], newStatus="INACTIVE")
    con = sqlite3.connect(inv_path)
    con.execute("UPDATE boards SET state='issued' WHERE thing='bta-fs'")
    con.execute("UPDATE boards SET state='issued', cert_id=?, fingerprint='x' "
                "WHERE thing='bta-nvs'", (stray.certificate_id,))
    con.commit()
    con.close()
    rc, out, err = _run(capsys, *argv)
    assert rc == 0, err
    res2 = {r["thing"]: r for r in json.loads(out)}
    assert res2["bta-fs"]["result"] == "finished"
    assert _describe(recs["bta-fs"]["cert_id"])["status"] == "ACTIVE"
    assert res2["bta-nvs"]["result"] == "done"
    new = res2["bta-nvs"]["cert_id"]
    assert new not in (stray.certificate_id, recs["bta-nvs"]["cert_id"])
    assert _describe(stray.certificate_id)["status"] == "INACTIVE"
    assert iot.list_principal_things(principal=stray.arn)["things"] == []
    assert iot.list_attached_policies(target=stray.arn)["policies"] == []
    assert _describe(new)["status"] == "ACTIVE"
    assert held_certificate(boards[1].port, boot_wait_s=5) == _der_id(new)
    assert res2["bta-partition"]["result"] == "skipped"
    actions = [json.loads(x) for x in audit.read_text().splitlines()]
    assert {"failed", "rolled-back", "issued", "done", "skipped", "activated", "finished"} <= {
        a["action"] for a in actions}
    assert all(a.get("region", "eu-west-1") == "eu-west-1" for a in actions)
