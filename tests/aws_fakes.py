"""An AWS account for tests: moto (`mock_aws`, real boto3 calls in this process) plus what moto
5.2 lacks, answered from here through botocore's own event hooks after boto3 has validated and
serialised the request. Where moto differs from AWS IoT (checked on moto 5.2.5):

- Provisioning templates (Create/Describe/Update/ListVersions/CreateVersion/DeleteVersion
  ProvisioningTemplate) and RegisterThing are not implemented: `Templates` keeps them in memory
  so `aws setup` can be run and re-run; the bodies we send are checked by the tests, and
  RegisterThing itself is exercised against the local stand-in.
- CreateCertificateFromCsr ignores the CSR's public key and signs a fresh one: our public-key
  check must refuse moto's answer (tested as is). `honour_csr(ca)` answers it instead with a
  certificate for the CSR's key (signed by `ca`, registered in moto), only where a test needs
  the successful path.
- `setAsActive=False` still yields ACTIVE in moto; certificateId is SHA-256 of the PEM text
  (AWS: of the DER); AWS managed IAM policies are there only with load_aws_managed_policies.
- register_ca_certificate does not check the verification certificate.
- ListCACertificates is not implemented: answered here from the CA certificates registered
  meanwhile (RegisterCACertificate's answers, with moto's status of each).
- DescribeEndpoint answers another random address at every call (AWS: one per account and
  region): answered here with a fixed one.
"""

import contextlib
import datetime
import json
import os

import boto3

REGION = "eu-west-1"
SECRET = "upcertTestSecretKey0123456789abcdefghij"  # a fake secret: must never be printed
KEY_ID = "AKIAUPCERTTESTKEY001"
TOKEN = "upcertTestSessionToken//abcdef0123456789"
_Session = boto3.Session  # the real class, for clients the hooks must not see


class _Http:
    def __init__(self, status):
        self.status_code = status
        self.headers = {}
        self.content = b""


def _error(code, message, status=400):
    return _Http(status), {"Error": {"Code": code, "Message": message},
                           "ResponseMetadata": {"HTTPStatusCode": status}}


def _ok(body):
    return _Http(200), {**body, "ResponseMetadata": {"HTTPStatusCode": 200}}


class Templates:
    """Fleet provisioning templates kept in memory (moto has none)."""

    def __init__(self, region=REGION, account="123456789012"):
        self.templates, self.calls = {}, []
        self.arn = f"arn:aws:iot:{region}:{account}:provisioningtemplate/"

    def __call__(self, op, p):
        self.calls.append((op, p))
        name = p.get("templateName")
        t = self.templates.get(name)
        if op != "CreateProvisioningTemplate" and t is None:
            return _error("ResourceNotFoundException", f"template {name} not found", 404)
        if op == "CreateProvisioningTemplate":
            if t is not None:
                return _error("ResourceAlreadyExistsException", f"{name} exists", 409)
            json.loads(p["templateBody"])  # AWS refuses a body that is not JSON
            self.templates[name] = {"templateName": name, "templateBody": p["templateBody"],
                                    "enabled": p.get("enabled", False), "type": p.get("type"),
                                    "provisioningRoleArn": p["provisioningRoleArn"],
                                    "defaultVersionId": 1, "versions": [1]}
            return _ok({"templateArn": self.arn + name, "templateName": name,
                        "defaultVersionId": 1})
        if op == "DescribeProvisioningTemplate":
            return _ok({k: v for k, v in t.items() if k != "versions"})
        if op == "UpdateProvisioningTemplate":
            t.update({k: p[k] for k in ("enabled", "provisioningRoleArn") if k in p})
            return _ok({})
        if op == "ListProvisioningTemplateVersions":
            return _ok({"versions": [{"versionId": v, "isDefaultVersion":
                                      v == t["defaultVersionId"]} for v in t["versions"]]})
        if op == "CreateProvisioningTemplateVersion":
            if len(t["versions"]) >= 5:
                return _error("VersionsLimitExceededException", "5 versions", 409)
            v = max(t["versions"]) + 1
            t["versions"].append(v)
            t["templateBody"], t["defaultVersionId"] = p["templateBody"], v
            return _ok({"versionId": v, "isDefaultVersion": True})
        if op == "DeleteProvisioningTemplateVersion":
            t["versions"].remove(p["versionId"])
            return _ok({})
        raise AssertionError(op)


TEMPLATE_OPS = ("CreateProvisioningTemplate", "DescribeProvisioningTemplate",
                "UpdateProvisioningTemplate", "ListProvisioningTemplateVersions",
                "CreateProvisioningTemplateVersion", "DeleteProvisioningTemplateVersion")


class Account:
    """The fake account: `answer[op] = fn(params) -> (http, parsed) | None` overrides an IoT
    operation (None: let moto answer); `templates` is the template store."""

    def __init__(self):
        self.templates = Templates()
        self.answer = {op: (lambda p, op=op: self.templates(op, p)) for op in TEMPLATE_OPS}
        self.endpoint = f"a1b2c3d4e5f6g7-ats.iot.{REGION}.amazonaws.com"
        self.answer["DescribeEndpoint"] = lambda p: _ok({"endpointAddress": self.endpoint})
        self.cas = []
        self.answer["ListCACertificates"] = self._list_cas

    def _list_cas(self, p):
        iot = _Session(region_name=REGION).client("iot")
        out = []
        for cid in self.cas:
            d = iot.describe_ca_certificate(certificateId=cid)["certificateDescription"]
            out.append({"certificateId": cid, "certificateArn": d["certificateArn"],
                        "status": d["status"]})
        return _ok({"certificates": out})

    def hook(self, session):
        def stash(params, context, model, **kw):
            context["upcert_params"] = dict(params)

        def call(model, context, **kw):
            fn = self.answer.get(model.name)
            return fn(context.get("upcert_params", {})) if fn else None

        def registered(http_response, parsed, model, **kw):
            if model.name == "RegisterCACertificate" and "certificateId" in parsed:
                self.cas.append(parsed["certificateId"])

        session.events.register("before-parameter-build.iot", stash)
        session.events.register("before-call.iot", call)
        session.events.register("after-call.iot", registered)

    def deny(self, op, message="User is not authorized"):
        """Answer `op` with AccessDeniedException, as AWS does without the permission."""
        self.answer[op] = lambda p: _error("AccessDeniedException", message, 403)


def honour_csr(account, ca, days=365):
    """Answer CreateCertificateFromCsr as AWS does, for the CSR's own key (signed by `ca`, a
    LocalCa), registered in moto so that later calls know it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def answer(p):
        csr = x509.load_pem_x509_csr(p["certificateSigningRequest"].encode())
        cn = csr.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
        cert = ca.issue_device(cn, csr.public_key(), days=days)
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        iot = _Session(region_name=REGION).client("iot")
        got = iot.register_certificate_without_ca(
            certificatePem=pem, status="ACTIVE" if p.get("setAsActive") else "INACTIVE")
        return _ok({"certificateArn": got["certificateArn"], "certificateId": got["certificateId"],
                    "certificatePem": pem})

    account.answer["CreateCertificateFromCsr"] = answer


@contextlib.contextmanager
def moto_account(monkeypatch, home):
    """mock_aws with fake credentials in the environment, $UPCERT_HOME = home, the template
    store hooked into every boto3 session made meanwhile; yields the Account."""
    from moto import mock_aws

    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("UPCERT_HOME", str(home))
    account = Account()

    def session(*a, **kw):
        s = _Session(*a, **kw)
        account.hook(s)
        return s

    with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
        # mock_aws puts its own fake credentials in the environment: ours again, so that the
        # tests can look for them in what upcert prints
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
        monkeypatch.setattr(boto3, "Session", session)
        yield account


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)
