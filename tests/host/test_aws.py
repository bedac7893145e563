"""upcert.aws against moto (real boto3 calls, `mock_aws`): `aws setup` and its idempotent re-runs,
the public-key refusal of CreateCertificateFromCsr with moto's own answer, certificates, rotation
jobs, bring-your-own CA, and every AWS error as one line without secrets. What moto lacks or does
differently is listed in tests/aws_fakes.py, where it is made up for."""

import json
import os
import stat

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from upcert import cli, policy
from upcert.aws import client as awsclient
from upcert.aws import fleet, identity, roots
from upcert.pki import certs

from tests.aws_fakes import KEY_ID, REGION, SECRET, TOKEN, moto_account


@pytest.fixture
def account(monkeypatch, tmp_path):
    with moto_account(monkeypatch, tmp_path / "home") as acct:
        yield acct


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `upcert argv`; no secret in either."""
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    for secret in (SECRET, TOKEN, KEY_ID):
        assert secret not in out + err
    return rc, out, err


def aws():
    return awsclient.Aws(region=REGION)


def test_setup_creates_everything_then_changes_nothing(account, capsys, tmp_path):
    rc, out, err = run(capsys, "aws", "setup", "--create-role")
    assert rc == 0, err
    assert "created or updated" in out
    for line in ("policy upcert-device: created", "policy upcert-claim: created",
                 "template upcert-rotation: created", "template upcert-claim: created",
                 "roots Amazon Root CA 1 + 3: created"):
        assert line in out, out
    assert "role arn:aws:iam::123456789012:role/upcert-provisioning: created" in out
    iot, iam = boto3.client("iot"), boto3.client("iam")
    doc = json.loads(iot.get_policy(policyName="upcert-device")["policyDocument"])
    assert doc == policy.device_policy(REGION, "123456789012")
    assert [p["PolicyArn"] for p in iam.list_attached_role_policies(
        RoleName="upcert-provisioning")["AttachedPolicies"]] == [fleet.REGISTRATION_POLICY]
    folder = tmp_path / "home" / "aws" / REGION
    settings = json.loads((folder / "aws.json").read_text())
    assert settings["endpoint"] == iot.describe_endpoint(endpointType="iot:Data-ATS")[
        "endpointAddress"]
    assert (settings["rotation_template"], settings["claim_template"]) == ("upcert-rotation",
                                                                          "upcert-claim")
    for name in ("claim.cert.pem", "claim.key.pem", "claim.json"):
        assert stat.S_IMODE((folder / "claim" / name).stat().st_mode) == 0o600
    claim = settings["claim"]["certificate_id"]
    desc = iot.describe_certificate(certificateId=claim)["certificateDescription"]
    assert desc["status"] == "ACTIVE"
    assert [p["policyName"] for p in iot.list_attached_policies(
        target=desc["certificateArn"])["policies"]] == ["upcert-claim"]
    pems = x509.load_pem_x509_certificates((folder / "AmazonRootCA.pem").read_bytes())
    assert [c.fingerprint(hashes.SHA256()).hex() for c in pems] == list(
        roots.AMAZON_ROOTS.values())
    # the templates as AWS would get them (moto has none: tests/aws_fakes.Templates)
    tpl = account.templates.templates
    rot = json.loads(tpl["upcert-rotation"]["templateBody"])
    assert rot["Resources"]["certificate"]["Properties"]["Status"] == "ACTIVE"
    assert rot["Resources"]["policy"]["Properties"]["PolicyName"] == "upcert-device"
    assert "OverrideSettings" in rot["Resources"]["thing"]  # an existing thing
    claimtpl = json.loads(tpl["upcert-claim"]["templateBody"])
    assert "OverrideSettings" not in claimtpl["Resources"]["thing"]  # creates the thing
    assert tpl["upcert-rotation"]["enabled"] and tpl["upcert-rotation"]["type"] == \
        "FLEET_PROVISIONING"

    rc, out, err = run(capsys, "aws", "setup", "--create-role")  # again: nothing changes
    assert rc == 0, err
    assert "nothing to change" in out
    assert ": created" not in out and ": updated" not in out
    assert json.loads((folder / "aws.json").read_text())["claim"]["certificate_id"] == claim
    assert len(iot.list_certificates()["certificates"]) == 1  # the claim is made once


def test_setup_updates_what_drifted(account, capsys):
    assert run(capsys, "aws", "setup", "--create-role")[0] == 0
    iot = boto3.client("iot")
    drifted = policy.device_policy(REGION, "123456789012")
    drifted["Statement"][1]["Resource"].append("arn:aws:iot:eu-west-1:123456789012:topic/x")
    iot.create_policy_version(policyName="upcert-device", policyDocument=json.dumps(drifted),
                              setAsDefault=True)
    account.templates.templates["upcert-claim"]["enabled"] = False
    rc, out, _ = run(capsys, "aws", "setup", "--create-role")
    assert "policy upcert-device: updated" in out and "template upcert-claim: updated" in out
    assert "policy upcert-claim: unchanged" in out
    assert json.loads(iot.get_policy(policyName="upcert-device")["policyDocument"]) == \
        policy.device_policy(REGION, "123456789012")
    assert "nothing to change" in run(capsys, "aws", "setup", "--create-role")[1]


def test_setup_needs_a_role(account, capsys):
    rc, out, err = run(capsys, "aws", "setup")
    assert rc == 1 and err.count("\n") == 1
    assert "--create-role" in err and "--role-arn" in err
    rc, out, err = run(capsys, "aws", "setup", "--role-arn",
                       "arn:aws:iam::123456789012:role/mine")
    assert rc == 0 and "role arn:aws:iam::123456789012:role/mine: given" in out
    assert account.templates.templates["upcert-rotation"]["provisioningRoleArn"] == \
        "arn:aws:iam::123456789012:role/mine"


def test_access_denied_is_one_line_naming_action_region_resource(account, capsys):
    account.deny("CreateProvisioningTemplate",
                 f"User: arn:aws:iam::123456789012:user/x ({KEY_ID}, {SECRET}) is not authorized")
    rc, out, err = run(capsys, "aws", "setup", "--create-role", "--region", REGION)
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith("upcert: AccessDeniedException on iot:CreateProvisioningTemplate in "
                          "eu-west-1 for provisioning template upcert-rotation: your AWS "
                          "credentials needs iot:CreateProvisioningTemplate, or pass --role-arn"), err


def test_aws_error_text_is_scrubbed_of_credentials(account, capsys):
    account.answer["DescribeEndpoint"] = lambda p: (
        awsclient_error("InternalFailure", f"signature for {KEY_ID} {SECRET} {TOKEN} failed"))
    rc, out, err = run(capsys, "aws", "setup", "--create-role")
    assert rc == 1 and "InternalFailure on iot:DescribeEndpoint" in err
    assert "<access key id>" in err and "<redacted>" in err


def awsclient_error(code, message):
    from tests.aws_fakes import _error

    return _error(code, message, 500)


def test_no_credentials_no_region_unreachable(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("UPCERT_HOME", str(tmp_path))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    rc, _, err = run(capsys, "aws", "setup", "--create-role")
    assert rc == 1 and "no AWS region: pass --region" in err
    rc, _, err = run(capsys, "aws", "setup", "--create-role", "--region", REGION)
    assert rc == 1 and "no AWS credentials found" in err and "aws configure" in err
    rc, _, err = run(capsys, "aws", "setup", "--profile", "nope", "--region", REGION)
    assert rc == 1 and "no AWS profile 'nope'" in err
    # credentials, but AWS cannot be reached: a closed local port as the endpoint
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    rc, _, err = run(capsys, "aws", "setup", "--create-role", "--region", REGION)
    assert rc == 1 and err.startswith("upcert: cannot reach AWS in eu-west-1"), err


def _csr(cn="dev1"):
    key = certs.generate_key("ec")
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return csr, key


def test_certificate_from_csr_refuses_motos_answer(account):
    # moto's CreateCertificateFromCsr signs a key of its own, not the CSR's (see
    # tests/aws_fakes.py): exactly the answer our check exists for. Refused, and retired.
    csr, _ = _csr()
    with pytest.raises(awsclient.AwsError, match="another public key than the board's CSR"):
        identity.certificate_from_csr(aws(), csr)
    assert boto3.client("iot").list_certificates()["certificates"] == []


def test_certificate_from_csr_accepts_the_boards_key(account, tmp_path):
    from upcert.pki.ca import LocalCa

    from tests.aws_fakes import honour_csr

    honour_csr(account, LocalCa.init(tmp_path / "ca", key_type="ec"))
    csr, key = _csr()
    issued = identity.certificate_from_csr(aws(), csr)
    assert identity.public_key_matches(issued.certificate, key.public_key())
    assert boto3.client("iot").describe_certificate(certificateId=issued.certificate_id)[
        "certificateDescription"]["status"] == "INACTIVE"  # activated once the board holds it


def test_certs_and_rotate_on_aws(account, capsys):
    iot = boto3.client("iot")
    iot.create_thing(thingName="dev1")
    made = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_thing_principal(thingName="dev1", principal=made["certificateArn"])
    cid = made["certificateId"]
    rc, out, _ = run(capsys, "certs", "list", "--aws")
    assert rc == 0 and f"{cid[:16]}  ACTIVE" in out and "dev1" in out
    for cmd, status in (("deactivate", "INACTIVE"), ("revoke", "REVOKED"),
                        ("activate", "ACTIVE")):
        rc, out, err = run(capsys, "certs", cmd, cid[:10], "--aws")
        assert rc == 0, err
        assert iot.describe_certificate(certificateId=cid)["certificateDescription"][
            "status"] == status
    rc, _, err = run(capsys, "certs", "revoke", "0000000000", "--aws")
    assert rc == 1 and "none has that id" in err
    rc, out, err = run(capsys, "rotate", "--thing", "dev1", "--aws")
    assert rc == 0, err
    job = out.split()[1]
    assert json.loads(iot.get_job_document(jobId=job)["document"]) == policy.ROTATE_DOCUMENT
    assert iot.describe_job(jobId=job)["job"]["targets"] == [
        iot.describe_thing(thingName="dev1")["thingArn"]]
    rc, _, err = run(capsys, "rotate", "--thing", "nobody", "--aws")
    assert rc == 1 and "thing nobody" in err and "upcert provision --aws" in err


def test_register_ca_then_a_device_certificate(account, capsys, tmp_path):
    from upcert.pki.ca import LocalCa

    ca = LocalCa.init(tmp_path / "ca", key_type="rsa")
    rc, out, err = run(capsys, "aws", "register-ca", "--ca-dir", str(ca.directory))
    assert rc == 0 and ": created, ACTIVE" in out, err
    iot = boto3.client("iot")
    [c] = iot.list_ca_certificates()["certificates"]
    assert c["status"] == "ACTIVE"
    rc, out, _ = run(capsys, "aws", "register-ca", "--ca-dir", str(ca.directory))
    assert ": unchanged" in out and len(iot.list_ca_certificates()["certificates"]) == 1
    key = certs.generate_key("ec")
    issued = identity.register_certificate(aws(), ca.issue_device("dev2", key.public_key()),
                                           ca.certificate)
    assert issued.certificate_id
    desc = iot.describe_certificate(certificateId=issued.certificate_id)["certificateDescription"]
    assert x509.load_pem_x509_certificate(desc["certificatePem"].encode()) == issued.certificate
    assert desc["status"] == "INACTIVE"  # activated once the board holds it


def test_verification_certificate_proves_the_ca_key(tmp_path):
    from upcert.aws.ca import verification_certificate
    from upcert.pki.ca import LocalCa

    ca = LocalCa.init(tmp_path / "ca", key_type="ec")
    key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), None)
    v = verification_certificate(ca.certificate, key, "abc123registrationcode")
    assert v.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "abc123registrationcode"
    v.verify_directly_issued_by(ca.certificate)


def test_amazon_roots_checked_by_fingerprint():
    import certifi

    bundle = open(certifi.where(), "rb").read()
    got = roots.amazon_roots(bundle)
    assert [c.subject.rfc4514_string() for c in got] == [
        "CN=Amazon Root CA 1,O=Amazon,C=US", "CN=Amazon Root CA 3,O=Amazon,C=US"]
    # a bundle whose "Amazon Root CA 3" is another certificate is refused
    from upcert.pki.ca import LocalCa  # noqa: F401

    key = certs.generate_key("ec")
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Amazon Root CA 3")])
    fake = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(got[0].not_valid_before_utc)
            .not_valid_after(got[0].not_valid_after_utc).sign(key, hashes.SHA256()))
    one = got[0].public_bytes(serialization.Encoding.PEM)
    with pytest.raises(awsclient.AwsError, match="Amazon Root CA 3: .*another fingerprint"):
        roots.amazon_roots(one + fake.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(awsclient.AwsError, match="Amazon Root CA 3: .*lacks it"):
        roots.amazon_roots(one)


def test_thing_type_and_group_made_by_another_board_meanwhile(account):
    # Boards of one batch share a thing type and group: another board's thread may create them
    # between this one's describe and create. Here describe says "not found" once, after the
    # other board made them: the create is refused (ResourceAlreadyExists), and the thing is
    # still made, typed and grouped.
    a = aws()
    iot = a.iot
    iot.create_thing_type(thingTypeName="sensor")
    iot.create_thing_group(thingGroupName="line-a")
    real = {n: getattr(iot, n) for n in ("describe_thing_type", "describe_thing_group")}

    def not_yet(name):
        def call(**kw):
            setattr(iot, name, real[name])  # once
            raise iot.exceptions.ResourceNotFoundException(
                {"Error": {"Code": "ResourceNotFoundException", "Message": "not yet"}}, name)
        return call

    for name in real:
        setattr(iot, name, not_yet(name))
    done = identity.ensure_thing(a, "dev-race", "sensor", "line-a", {"line": "a"})
    # (moto refuses a second CreateThingGroup, but answers a second CreateThingType as created)
    assert "thing dev-race created" in done and "thing group line-a created" not in done, done
    assert iot.describe_thing(thingName="dev-race")["thingTypeName"] == "sensor"
    groups = iot.list_thing_groups_for_thing(thingName="dev-race")["thingGroups"]
    assert [g["groupName"] for g in groups] == ["line-a"]
