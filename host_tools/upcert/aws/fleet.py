"""`upcert aws setup`: what a fleet needs in an AWS account, created or brought up to date
idempotently, each resource reported as created, updated or unchanged: the device and claim
policies (upcert.policy), the IAM role AWS IoT provisions with, the rotation and claim provisioning
templates, a claim certificate, the ATS endpoint and Amazon's roots, and `aws.json` beside them
for `upcert provision --aws`. Provisioning templates: AWS IoT Developer Guide, "Provisioning
templates" (fleet provisioning) and "Provisioning devices that don't have device certificates
using fleet provisioning"."""

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from upcert import policy
from upcert.aws.client import AwsError
from upcert.aws.roots import amazon_roots
from upcert.validate import write_private

ROLE_NAME = "upcert-provisioning"
# AWS's managed policy for a provisioning role (AWS IoT Developer Guide, "Provisioning devices
# that don't have device certificates using fleet provisioning").
REGISTRATION_POLICY = "arn:aws:iam::aws:policy/service-role/AWSIoTThingsRegistration"
TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"},
     "Action": "sts:AssumeRole"}]}
MAX_VERSIONS = 5  # policies and provisioning templates keep at most 5 versions
ROLE_WAIT_S = 60  # a new IAM role takes seconds to become usable by AWS IoT


@dataclass
class Report:
    """What setup did: [(kind, name, 'created'|'updated'|'unchanged'|'given')]."""
    steps: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def add(self, kind, name, outcome, log):
        self.steps.append((kind, name, outcome))
        log(f"{kind} {name}: {outcome}")

    @property
    def changed(self):
        return [s for s in self.steps if s[2] in ("created", "updated")]


def state_dir(home, region):
    """$UPCERT_HOME/aws/<region>: aws.json, AmazonRootCA.pem, claim/."""
    return Path(home) / "aws" / region


def load_settings(home, region):
    """aws.json of `upcert aws setup` for region; AwsError when setup has not run there."""
    path = state_dir(home, region) / "aws.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise AwsError(f"no AWS set-up for {region} in {path.parent}: run `upcert aws setup "
                       f"--region {region}` first") from None
    except ValueError:
        raise AwsError(f"{path} is corrupt: run `upcert aws setup --region {region}` again") from None


def _thing_resource(override):
    thing = {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}}
    if override:
        # rotation: the thing exists already; keep its type, attributes and groups
        thing["OverrideSettings"] = {"AttributePayload": "DO_NOTHING",
                                     "ThingTypeName": "DO_NOTHING", "ThingGroups": "DO_NOTHING"}
    return thing


def template_body(policy_name, existing_thing):
    """A fleet provisioning template: the certificate of the ownership token made ACTIVE, the
    policy attached, and the thing named by the parameter ThingName (existing_thing: a
    rotation, the thing is kept as it is; else a claim, the thing is created)."""
    return {
        "Parameters": {"ThingName": {"Type": "String"},
                       "AWS::IoT::Certificate::Id": {"Type": "String"}},
        "Resources": {
            "certificate": {"Type": "AWS::IoT::Certificate",
                            "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                                           "Status": "ACTIVE"}},
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": policy_name}},
            "thing": _thing_resource(existing_thing),
        },
    }


def _missing(aws, call, **kw):
    """call(**kw)'s answer, or None when AWS says the resource does not exist."""
    import botocore.exceptions as bx

    try:
        return call(**kw)
    except bx.ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("ResourceNotFoundException",
                                                       "NoSuchEntity"):
            return None
        raise


def ensure_policy(aws, name, document):
    """Create the IoT policy, or make `document` its default version; the outcome."""
    iot = aws.iot
    with aws.errors(f"policy {name}"):
        got = _missing(aws, iot.get_policy, policyName=name)
        if got is None:
            iot.create_policy(policyName=name, policyDocument=policy.text(document))
            return "created"
        if json.loads(got["policyDocument"]) == document:
            return "unchanged"
        versions = iot.list_policy_versions(policyName=name)["policyVersions"]
        if len(versions) >= MAX_VERSIONS:
            oldest = min((v for v in versions if not v["isDefaultVersion"]),
                         key=lambda v: int(v["versionId"]))
            iot.delete_policy_version(policyName=name, policyVersionId=oldest["versionId"])
        iot.create_policy_version(policyName=name, policyDocument=policy.text(document),
                                  setAsDefault=True)
        return "updated"


def ensure_role(aws, role_arn=None, create=False):
    """(role ARN, outcome) of the provisioning role: the given one, upcert's own (made with
    AWSIoTThingsRegistration when create), or AwsError saying how to get one."""
    if role_arn:
        if not role_arn.startswith("arn:aws") or ":role/" not in role_arn:
            raise AwsError(f"--role-arn {role_arn!r}: give an IAM role ARN, "
                           "arn:aws:iam::<account>:role/<name>")
        return role_arn, "given"
    iam = aws.iam
    with aws.errors(f"role {ROLE_NAME}", hint="pass --create-role, or --role-arn"):
        got = _missing(aws, iam.get_role, RoleName=ROLE_NAME)
        if got is None and not create:
            raise AwsError(f"no provisioning role {ROLE_NAME} in the account: pass --create-role "
                           "(creates it with AWS's managed policy AWSIoTThingsRegistration), or "
                           "--role-arn ARN of a role AWS IoT may assume")
        outcome = "unchanged"
        if got is None:
            got = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(TRUST),
                                  Description="AWS IoT fleet provisioning for upcert")
            outcome = "created"
        attached = iam.list_attached_role_policies(RoleName=ROLE_NAME)["AttachedPolicies"]
        if create and REGISTRATION_POLICY not in [p["PolicyArn"] for p in attached]:
            iam.attach_role_policy(RoleName=ROLE_NAME, PolicyArn=REGISTRATION_POLICY)
            outcome = "created" if outcome == "created" else "updated"
        return got["Role"]["Arn"], outcome


def ensure_template(aws, name, body, role_arn, description, role_is_new=False):
    """Create the fleet provisioning template, or bring body, role and enabled up to date."""
    import botocore.exceptions as bx

    iot = aws.iot
    text = json.dumps(body, sort_keys=True)
    with aws.errors(f"provisioning template {name}"):
        got = _missing(aws, iot.describe_provisioning_template, templateName=name)
        if got is None:
            deadline = time.monotonic() + (ROLE_WAIT_S if role_is_new else 0)
            while True:
                try:
                    iot.create_provisioning_template(
                        templateName=name, description=description, templateBody=text,
                        enabled=True, provisioningRoleArn=role_arn, type="FLEET_PROVISIONING")
                    return "created"
                except bx.ClientError as e:
                    # IAM is eventually consistent: a role made seconds ago cannot be assumed yet
                    if (e.response.get("Error", {}).get("Code") != "InvalidRequestException"
                            or time.monotonic() > deadline):
                        raise
                    time.sleep(3)
        outcome = "unchanged"
        if json.loads(got["templateBody"]) != body:
            versions = iot.list_provisioning_template_versions(templateName=name)["versions"]
            if len(versions) >= MAX_VERSIONS:
                oldest = min((v for v in versions if not v["isDefaultVersion"]),
                             key=lambda v: v["versionId"])
                iot.delete_provisioning_template_version(templateName=name,
                                                         versionId=oldest["versionId"])
            iot.create_provisioning_template_version(templateName=name, templateBody=text,
                                                     setAsDefault=True)
            outcome = "updated"
        if got.get("provisioningRoleArn") != role_arn or not got.get("enabled"):
            iot.update_provisioning_template(templateName=name, enabled=True,
                                             provisioningRoleArn=role_arn)
            outcome = "updated"
        return outcome


def ensure_claim(aws, folder, claim_policy):
    """The claim certificate: made once by CreateKeysAndCertificate (provisioning by claim is
    AWS's design in which this key leaves AWS, shared by a batch of boards), its PEM files 0600
    in folder, ACTIVE and attached to the claim policy. (certificate id, outcome)."""
    folder = Path(folder)
    meta_path, cert_path, key_path = (folder / "claim.json", folder / "claim.cert.pem",
                                      folder / "claim.key.pem")
    iot = aws.iot
    with aws.errors(f"claim certificate in {folder}"):
        cid = None
        if meta_path.exists() and cert_path.exists() and key_path.exists():
            cid = json.loads(meta_path.read_text()).get("certificateId")
            got = _missing(aws, iot.describe_certificate, certificateId=cid) if cid else None
            if got is None or got["certificateDescription"]["status"] != "ACTIVE":
                cid = None  # deleted or retired in the account: a new claim
        outcome = "unchanged"
        if cid is None:
            made = iot.create_keys_and_certificate(setAsActive=True)
            cid, arn = made["certificateId"], made["certificateArn"]
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
            write_private(key_path, made["keyPair"]["PrivateKey"])
            write_private(cert_path, made["certificatePem"])
            write_private(meta_path, json.dumps({"certificateId": cid, "certificateArn": arn}))
            outcome = "created"
        arn = json.loads(meta_path.read_text())["certificateArn"]
        attached = [p["policyName"] for p in iot.list_attached_policies(target=arn)["policies"]]
        if claim_policy not in attached:
            iot.attach_policy(policyName=claim_policy, target=arn)
            outcome = "created" if outcome == "created" else "updated"
        return cid, outcome


def endpoint(aws):
    """The account's ATS data endpoint (iot:Data-ATS: served with Amazon's roots)."""
    with aws.errors("the iot:Data-ATS endpoint"):
        return aws.iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]


def _write_if_changed(path, text):
    if path.exists() and path.read_text() == text:
        return "unchanged"
    outcome = "updated" if path.exists() else "created"
    write_private(path, text)
    return outcome


def setup(aws, home, role_arn=None, create_role=False, log=print):
    """Everything `upcert aws setup` does, in order; a Report."""
    from cryptography.hazmat.primitives import serialization

    rep = Report()
    account = aws.account()
    region = aws.region
    folder = state_dir(home, region)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    rep.add("policy", policy.DEVICE_POLICY, ensure_policy(
        aws, policy.DEVICE_POLICY, policy.device_policy(region, account)), log)
    rep.add("policy", policy.CLAIM_POLICY, ensure_policy(
        aws, policy.CLAIM_POLICY, policy.claim_policy(region, account)), log)
    role, outcome = ensure_role(aws, role_arn, create_role)
    rep.add("role", role, outcome, log)
    new_role = outcome == "created"
    rep.add("template", policy.ROTATION_TEMPLATE, ensure_template(
        aws, policy.ROTATION_TEMPLATE, template_body(policy.DEVICE_POLICY, True), role,
        "upcert: certificate rotation of an existing thing (CreateCertificateFromCsr + "
        "RegisterThing)", new_role), log)
    rep.add("template", policy.CLAIM_TEMPLATE, ensure_template(
        aws, policy.CLAIM_TEMPLATE, template_body(policy.DEVICE_POLICY, False), role,
        "upcert: provisioning by claim (a new thing, its own key made on the board)",
        new_role), log)
    cid, outcome = ensure_claim(aws, folder / "claim", policy.CLAIM_POLICY)
    rep.add("claim certificate", cid[:16], outcome, log)
    ep = endpoint(aws)
    roots = amazon_roots()
    pem = "".join(r.public_bytes(serialization.Encoding.PEM).decode() for r in roots)
    rep.add("roots", "Amazon Root CA 1 + 3", _write_if_changed(folder / "AmazonRootCA.pem", pem),
            log)
    rep.settings = {"region": region, "account": account, "endpoint": ep,
                    "device_policy": policy.DEVICE_POLICY, "claim_policy": policy.CLAIM_POLICY,
                    "rotation_template": policy.ROTATION_TEMPLATE,
                    "claim_template": policy.CLAIM_TEMPLATE, "role_arn": role,
                    "roots": str(folder / "AmazonRootCA.pem"),
                    "claim": {"certificate_id": cid, "cert": str(folder / "claim" / "claim.cert.pem"),
                              "key": str(folder / "claim" / "claim.key.pem")}}
    rep.add("settings", str(folder / "aws.json"), _write_if_changed(
        folder / "aws.json", json.dumps(rep.settings, indent=2, sort_keys=True) + "\n"), log)
    rep.add("endpoint", ep, "unchanged" if rep.steps[-1][2] == "unchanged" else "found", log)
    return rep
