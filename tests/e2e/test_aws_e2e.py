"""`upcert provision --aws` on emulated boards, AWS being moto (in this process, real boto3 calls;
what moto lacks or does differently: tests/aws_fakes.py). The MQTT part is the local stand-in:
for the boards to connect, the settings `aws setup` wrote name the stand-in's endpoint, port and
CA instead of the account's, and CreateCertificateFromCsr is answered with a certificate for the
CSR's key from the stand-in's CA (moto would sign a key of its own, which our check refuses:
the first test)."""

import json

import boto3
import pytest
from upcert import cli
from upcert.pki import certs

from tests.aws_fakes import KEY_ID, SECRET, TOKEN, honour_csr

# the emulated board's network.WLAN joins any network it is given
_NET = ("--wifi-ssid", "upcert-lab", "--telemetry-interval", "2")


def _standin(tmp_path, cloud, ca):
    # the settings `aws setup` wrote, pointed at the local stand-in for the MQTT part
    path = tmp_path / "home" / "aws" / "eu-west-1" / "aws.json"
    s = json.loads(path.read_text())
    s.update(endpoint="localhost", port=cloud.port, roots=str(ca.ca_pem))
    path.write_text(json.dumps(s))


def _run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    for secret in (SECRET, TOKEN, KEY_ID):
        assert secret not in out + err
    return rc, out, err


def _pending_left(port):
    from upcert.board.transport import Board

    with Board(port, operation="test") as b:
        return "pending-key.der" in b.exec("import os\nprint(os.listdir('/upcert.d'))")


def _certificate(thing):
    iot = boto3.client("iot")
    [arn] = iot.list_thing_principals(thingName=thing)["principals"]
    cid = arn.rsplit("/", 1)[1]
    d = iot.describe_certificate(certificateId=cid)["certificateDescription"]
    policies = [p["policyName"] for p in iot.list_attached_policies(target=arn)["policies"]]
    return d, policies


def test_motos_certificate_for_another_key_is_refused_before_writing(account, board_factory,
                                                                     thing, capsys):
    board = board_factory()
    rc, _, err = _run(capsys, "provision", "--aws", "--thing", thing, "--port", board.port,
                      *_NET, "--no-reset")
    errors = [line for line in err.splitlines() if line.startswith("upcert: ")]
    assert rc == 1 and len(errors) == 1, err
    assert "another public key than the board's CSR: refused, nothing written" in err
    from upcert.board.provision import held_certificate

    assert held_certificate(board.port) == ""  # the store holds nothing
    assert not _pending_left(board.port)  # and the key made for it is gone
    iot = boto3.client("iot")
    claim = {c["certificateId"] for c in iot.list_certificates()["certificates"]}
    assert len(claim) == 1  # only the claim of `aws setup`: moto's certificate was deleted


@pytest.mark.parametrize("store", ["fs", "nvs"])
def test_provision_aws_key_made_on_the_board(account, board_factory, cloud, ca, thing, capsys,
                                             tmp_path, store):
    from upcert.cloud.standin import Subscription

    honour_csr(account, ca)
    _standin(tmp_path, cloud, ca)
    board = board_factory()
    with Subscription(cloud, f"things/{thing}/telemetry") as sub:
        rc, out, err = _run(capsys, "provision", "--aws", "--thing", thing, "--port", board.port,
                            *_NET, "--store", store, "--thing-type", "sensor",
                            "--thing-group", "lab", "--attr", "site=bench", "--attr", "rev=2")
        assert rc == 0, err
        body = json.loads(sub.wait_for(timeout_s=60).payload)
    d, policies = _certificate(thing)
    assert d["status"] == "ACTIVE" and policies == ["upcert-device"]
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(d["certificatePem"].encode())
    assert certs.cert_id(cert).startswith(body["cert_id"].rstrip("…"))  # the board's telemetry
    iot = boto3.client("iot")
    t = iot.describe_thing(thingName=thing)
    assert t["thingTypeName"] == "sensor" and t["attributes"] == {"site": "bench", "rev": "2"}
    assert [g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=thing)[
        "thingGroups"]] == ["lab"]
    assert "certificate id" in out and "rotation template upcert-rotation" in out


def test_provision_aws_with_a_registered_local_ca(account, board_factory, cloud, ca, thing,
                                                  capsys, tmp_path):
    from upcert.cloud.standin import Subscription

    _standin(tmp_path, cloud, ca)
    assert _run(capsys, "aws", "register-ca", "--ca-dir", str(ca.directory))[0] == 0
    board = board_factory()
    with Subscription(cloud, f"things/{thing}/telemetry") as sub:
        rc, out, err = _run(capsys, "provision", "--aws", "--ca-dir", str(ca.directory),
                            "--thing", thing, "--port", board.port, *_NET)
        assert rc == 0, err
        sub.wait_for(timeout_s=60)
    d, policies = _certificate(thing)
    assert d["status"] == "ACTIVE" and policies == ["upcert-device"]
    assert "local CA" in out
    assert not _pending_left(board.port)


def test_provision_aws_key_travels_only_when_asked(account, board_factory, thing, capsys):
    board = board_factory()
    rc, out, err = _run(capsys, "provision", "--aws", "--aws-insecure-key-travels", "--thing",
                        thing, "--port", board.port, *_NET, "--no-reset")
    assert rc == 0, err
    assert "the key travelled" in err
    d, policies = _certificate(thing)
    from cryptography import x509
    from upcert.board.provision import held_certificate

    cert = x509.load_pem_x509_certificate(d["certificatePem"].encode())
    assert d["status"] == "ACTIVE" and held_certificate(board.port) == certs.cert_id(cert)
    assert "PRIVATE KEY" not in out + err


def test_provision_aws_with_the_key_in_the_chip(account, board_factory, cloud, ca, thing,
                                                capsys, tmp_path):
    # A blank emulated ATECC608: locked, the key made in the chip, the CSR signed by it; the
    # certificate (answered for the CSR's key) is checked against the chip's public key; the
    # board then connects with upcert's own TLS client, the chip doing ECDHE and the signature.
    from upcert.cloud.standin import Subscription

    honour_csr(account, ca)
    _standin(tmp_path, cloud, ca)
    board = board_factory(atecc608="blank", heapsize="200K")
    with Subscription(cloud, f"things/{thing}/telemetry") as sub:
        rc, out, err = _run(capsys, "provision", "--aws", "--store", "atecc608", "--lock",
                            "--thing", thing, "--port", board.port, *_NET)
        assert rc == 0, err
        body = json.loads(sub.wait_for(timeout_s=90).payload)
    assert body["tls"] == "upcert"
    d, policies = _certificate(thing)
    assert d["status"] == "ACTIVE" and policies == ["upcert-device"]
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(d["certificatePem"].encode())
    assert certs.cert_id(cert).startswith(body["cert_id"].rstrip("…"))


def test_provision_claim_aws_writes_the_accounts_claim_endpoint_and_template(
        account, board_factory, thing, capsys, tmp_path):
    # The claim `aws setup` made (moto's certificate and key), the account's endpoint and
    # Amazon's roots go onto the board, with the claim template; no identity.
    from upcert.board.transport import Board

    settings = json.loads((tmp_path / "home" / "aws" / "eu-west-1" / "aws.json").read_text())
    board = board_factory()
    rc, out, err = _run(capsys, "provision", "--claim", "--aws", "--thing", thing, "--port",
                        board.port, *_NET, "--no-reset")
    assert rc == 0, err
    claim_cert = certs.load_certificate(settings["claim"]["cert"])
    # (the id of the DER: moto's own certificateId is the SHA-256 of the PEM text)
    assert f"claim certificate {certs.cert_id(claim_cert)[:16]}" in out
    with Board(board.port, operation="test") as b:
        cfg = json.loads(b.read_file("/upcert.d/config.json"))
        claim = b.read_file("/upcert.d/claim.der")
        roots = b.read_file("/upcert.d/roots.der")
        files = b.exec("import os\nprint(sorted(os.listdir('/upcert.d')))")
    assert cfg["endpoint"] == settings["endpoint"] and cfg["port"] == 8883
    assert cfg["claim"]["template"] == "upcert-claim" == settings["claim_template"]
    assert cfg["fleet"]["template"] == "upcert-rotation"
    assert claim == certs.cert_to_der(claim_cert)
    assert roots == b"".join(certs.cert_to_der(r)
                             for r in certs.load_certificates(settings["roots"]))
    assert "cert.der" not in files and "key.der" not in files  # no identity: the board claims it
    rc, _, err = _run(capsys, "provision", "--claim", "--aws", "--endpoint", "x.example.com",
                      "--thing", thing, "--port", board.port, *_NET)
    assert rc == 1 and "leave out --endpoint" in err
