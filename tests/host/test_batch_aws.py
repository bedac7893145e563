"""`upcert batch --aws` with image-folder targets, and `upcert fleet report --aws`, against moto
(tests/aws_fakes.py): the local CA must be registered first (else one line saying what to run,
nothing done); images get a local-CA certificate registered with AWS, activated once the images
hold it; a rerun skips; half-done targets are finished (activated) or rolled back (INACTIVE,
detached); the fleet report reads AWS's registry. Serial-port boards: tests/e2e/test_batch_aws_e2e.py."""

import json
import sqlite3

import boto3
import pytest
from cryptography import x509
from upcert import cli
from upcert.pki import certs

from tests.aws_fakes import KEY_ID, SECRET, TOKEN, moto_account


@pytest.fixture
def account(monkeypatch, tmp_path, capsys):
    with moto_account(monkeypatch, tmp_path / "home") as acct:
        assert cli.main(["aws", "setup", "--create-role"]) == 0
        capsys.readouterr()
        yield acct


@pytest.fixture
def ca(tmp_path):
    from upcert.pki.ca import LocalCa

    return LocalCa.init(tmp_path / "ca", key_type="ec")


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    for secret in (SECRET, TOKEN, KEY_ID):
        assert secret not in out + err
    return rc, out, err


def _manifest(tmp_path, rows):
    p = tmp_path / "batch.csv"
    p.write_text("target,thing,store,attributes,thing_type,thing_group\n"
                 + "\n".join(rows) + "\n")
    return p


def _batch(capsys, tmp_path, manifest, ca, *extra):
    return run(capsys, "batch", "--aws", "--manifest", str(manifest), "--no-wifi", "--ca-dir",
               str(ca.directory), "--inventory", str(tmp_path / "inv.sqlite"), "--audit",
               str(tmp_path / "audit.jsonl"), "--station", "st-a", "--json", *extra)


def _vfs_file(folder, path):
    from littlefs import LittleFS

    data = (folder / "vfs.bin").read_bytes()
    fs = LittleFS(block_size=4096, block_count=len(data) // 4096, mount=False)
    fs.context.buffer = bytearray(data)
    fs.mount()
    with fs.open(path, "rb") as f:
        return f.read()


def _status(cid):
    return boto3.client("iot").describe_certificate(certificateId=cid)[
        "certificateDescription"]["status"]


def _der_id(cid):
    pem = boto3.client("iot").describe_certificate(certificateId=cid)[
        "certificateDescription"]["certificatePem"]
    return certs.cert_id(x509.load_pem_x509_certificate(pem.encode()))


def test_images_need_the_local_ca_registered(account, ca, tmp_path, capsys):
    manifest = _manifest(tmp_path, [f"{tmp_path / 'img-a'},ba-1,fs,,,"])
    rc, out, err = _batch(capsys, tmp_path, manifest, ca)
    errors = [x for x in err.splitlines() if x.startswith("upcert: ")]
    assert rc == 1 and len(errors) == 1, err
    assert "not registered in AWS IoT (eu-west-1)" in err
    assert f"upcert aws register-ca --ca-dir {ca.directory}" in err
    assert not (tmp_path / "img-a").exists() and not (tmp_path / "inv.sqlite").exists()
    assert boto3.client("iot").list_things()["things"] == []


def test_manifest_rows_checked_before_anything(account, ca, tmp_path, capsys):
    manifest = _manifest(tmp_path, [f"{tmp_path / 'img-a'},ba-1,fs,site=a b,,"])
    rc, _, err = _batch(capsys, tmp_path, manifest, ca)
    assert rc == 1 and f"{manifest}:2: attribute 'site=a b'" in err
    manifest = _manifest(tmp_path, [f"{tmp_path / 'img-a'},ba-1,fs,,bad type,"])
    rc, _, err = _batch(capsys, tmp_path, manifest, ca)
    assert rc == 1 and f"{manifest}:2: thing_type 'bad type'" in err
    # types and groups are AWS's: refused on the stand-in rather than dropped
    manifest = _manifest(tmp_path, [f"{tmp_path / 'img-a'},ba-1,fs,,sensor,"])
    rc, _, err = run(capsys, "batch", "--manifest", str(manifest), "--endpoint", "localhost",
                     "--no-wifi", "--inventory", str(tmp_path / "inv.sqlite"))
    assert rc == 1 and "thing_type and thing_group apply on AWS IoT (--aws)" in err
    rc, _, err = run(capsys, "batch", "--aws", "--endpoint", "x.example.com", "--manifest",
                     str(manifest), "--no-wifi")
    assert rc == 1 and "leave out --endpoint" in err
    assert not (tmp_path / "img-a").exists()


def test_images_on_aws_resume_and_fleet_report(account, ca, tmp_path, capsys):
    from upcert.factory.image import read_manifest
    from upcert.factory.inventory import open_inventory

    assert run(capsys, "aws", "register-ca", "--ca-dir", str(ca.directory))[0] == 0
    imgs = {t: tmp_path / f"img-{t}" for t in ("ba-1", "ba-2", "ba-3")}
    manifest = _manifest(tmp_path, [
        f"{imgs['ba-1']},ba-1,fs,site=line-a;rev=2,sensor,line-a",
        f"{imgs['ba-2']},ba-2,nvs,,,",
        f"{imgs['ba-3']},ba-3,partition,,,"])
    rc, out, err = _batch(capsys, tmp_path, manifest, ca)
    assert rc == 0, err
    res = {r["thing"]: r for r in json.loads(out)}
    assert {r["result"] for r in res.values()} == {"done"}, res
    inv = open_inventory(tmp_path / "inv.sqlite")
    recs = {r["thing"]: r for r in inv.rows()}
    iot = boto3.client("iot")
    for t, r in recs.items():
        assert r["state"] == "done" and r["cert_id"] == res[t]["cert_id"]
        assert _status(r["cert_id"]) == "ACTIVE"  # activated: the images hold it
        assert read_manifest(imgs[t])["cert_id"] == _der_id(r["cert_id"])
        [arn] = iot.list_thing_principals(thingName=t)["principals"]
        assert arn.endswith(r["cert_id"])
        assert [p["policyName"] for p in iot.list_attached_policies(target=arn)[
            "policies"]] == ["upcert-device"]
        cfg = read_manifest(imgs[t])
        assert cfg["store"] == r["store"]
    t1 = iot.describe_thing(thingName="ba-1")
    assert t1["thingTypeName"] == "sensor" and t1["attributes"] == {"site": "line-a", "rev": "2"}
    assert [g["groupName"] for g in iot.list_thing_groups_for_thing(thingName="ba-1")[
        "thingGroups"]] == ["line-a"]
    settings = json.loads((tmp_path / "home" / "aws" / "eu-west-1" / "aws.json").read_text())
    cfg = json.loads(_vfs_file(imgs["ba-1"], "/upcert.d/config.json"))
    assert (cfg["endpoint"], cfg["port"]) == (settings["endpoint"], 8883)
    assert cfg["fleet"]["template"] == "upcert-rotation"
    roots = _vfs_file(imgs["ba-1"], "/upcert.d/roots.der")
    assert roots == b"".join(certs.cert_to_der(r) for r in certs.load_certificates(
        settings["roots"]))  # Amazon's roots: the board talks to AWS IoT

    # A rerun redoes nothing.
    rc, out, err = _batch(capsys, tmp_path, manifest, ca)
    assert rc == 0 and {r["result"] for r in json.loads(out)} == {"skipped"}, err

    # Half-done: ba-1 was stopped after its images were written, before activation (finished:
    # made ACTIVE); ba-2 after a certificate was issued for it that its images do not hold
    # (rolled back: INACTIVE, detached, a new one made).
    from upcert.aws import identity
    from upcert.aws.client import Aws

    aws = Aws(region="eu-west-1")
    key = certs.generate_key("ec")
    stray = identity.register_certificate(aws, ca.issue_device("ba-2", key.public_key()),
                                          ca.certificate)
    identity.attach(aws, stray, "ba-2", "upcert-device")
    identity.activate(aws, stray.certificate_id)
    iot.update_certificate(certificateId=recs["ba-1"]["cert_id"], newStatus="INACTIVE")
    con = sqlite3.connect(tmp_path / "inv.sqlite")
    con.execute("UPDATE boards SET state='issued' WHERE thing='ba-1'")
    con.execute("UPDATE boards SET state='issued', cert_id=?, fingerprint='x' WHERE thing='ba-2'",
                (stray.certificate_id,))
    con.commit()
    con.close()
    rc, out, err = _batch(capsys, tmp_path, manifest, ca)
    assert rc == 0, err
    res2 = {r["thing"]: r for r in json.loads(out)}
    assert res2["ba-1"]["result"] == "finished" and _status(recs["ba-1"]["cert_id"]) == "ACTIVE"
    assert res2["ba-2"]["result"] == "done"
    new2 = res2["ba-2"]["cert_id"]
    assert new2 not in (stray.certificate_id, recs["ba-2"]["cert_id"])
    assert _status(stray.certificate_id) == "INACTIVE"
    assert iot.list_principal_things(principal=stray.arn)["things"] == []
    assert iot.list_attached_policies(target=stray.arn)["policies"] == []
    assert _status(new2) == "ACTIVE" and read_manifest(imgs["ba-2"])["cert_id"] == _der_id(new2)
    assert res2["ba-3"]["result"] == "skipped"
    actions = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert {"issued", "done", "skipped", "activated", "finished", "rolled-back"} <= {
        a["action"] for a in actions}

    # The fleet report from AWS's registry: ba-2's first certificate (ACTIVE, on no board),
    # ba-3's made INACTIVE (still on its board), one expiring; the claim of `aws setup` apart.
    iot.update_certificate(certificateId=recs["ba-3"]["cert_id"], newStatus="INACTIVE")
    soon = ca.issue_device("ba-9", certs.generate_key("ec").public_key(), days=5)
    extra = identity.register_certificate(aws, soon, ca.certificate)
    identity.activate(aws, extra.certificate_id)
    con = sqlite3.connect(tmp_path / "inv.sqlite")
    con.execute("INSERT INTO boards (thing, state, store, station, cert_id, not_after, created, "
                "updated) VALUES ('ba-9', 'done', 'fs', 'st-a', ?, ?, 'x', 'x')",
                (extra.certificate_id, soon.not_valid_after_utc.isoformat()))
    con.commit()
    con.close()
    png = tmp_path / "fleet.png"
    rc, out, err = run(capsys, "fleet", "report", "--aws", "--inventory",
                       str(tmp_path / "inv.sqlite"), "--json", "--png", str(png))
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["source"] == "AWS IoT eu-west-1"
    assert {b["thing"] for b in rep["boards"]} == {"ba-1", "ba-2", "ba-3", "ba-9"}
    assert rep["inactive_on_boards"] == ["ba-3"]
    assert rep["expiring"] == ["ba-9"]
    assert [c["cert_id"] for c in rep["on_no_board"]] == [recs["ba-2"]["cert_id"]]
    assert settings["claim"]["certificate_id"] not in json.dumps(rep)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, out, _ = run(capsys, "fleet", "report", "--aws", "--inventory",
                     str(tmp_path / "inv.sqlite"))
    assert rc == 0 and "registry: AWS IoT eu-west-1" in out
    assert "INACTIVE or REVOKED on a board: 1 (ba-3)" in out
