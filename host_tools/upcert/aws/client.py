"""A boto3 session for one region and profile, and every AWS error as one line that names the
action, the region and the resource and says what to do. Nothing secret is ever put in a message:
AWS's own error text is scrubbed of the session's access key, secret key and token."""

import contextlib
import re

from upcert.errors import UpcertError

_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b")
# What to do after an AccessDenied on an action (besides giving the profile the permission).
_ALSO = {"iam:CreateRole": ", or pass --role-arn with an existing role",
         "iam:AttachRolePolicy": ", or pass --role-arn with an existing role",
         "iam:GetRole": ", or pass --role-arn with an existing role",
         "iam:PassRole": " (to hand the provisioning role to AWS IoT)",
         "iot:CreateProvisioningTemplate": ", or pass --role-arn",
         "iot:UpdateProvisioningTemplate": ", or pass --role-arn"}


class AwsError(UpcertError):
    """AWS refused or could not be reached; the message says which action, where, what to do."""


class Aws:
    """boto3 clients for one region and profile; `who` names the credentials in messages."""

    def __init__(self, region=None, profile=None, session=None):
        import boto3
        import botocore.exceptions as bx

        self.profile = profile
        try:
            self.session = session or boto3.Session(region_name=region, profile_name=profile)
        except bx.ProfileNotFound:
            raise AwsError(f"no AWS profile {profile!r} in ~/.aws/config or ~/.aws/credentials: "
                           "run `aws configure --profile NAME`, or pass another --profile") from None
        self.region = self.session.region_name
        if not self.region:
            raise AwsError("no AWS region: pass --region (e.g. eu-west-1), or set AWS_REGION "
                           "or a region in your profile")
        self._clients = {}

    @property
    def who(self):
        return f"the profile {self.profile!r}" if self.profile else "your AWS credentials"

    def client(self, name):
        if name not in self._clients:
            self._clients[name] = self.session.client(name, region_name=self.region)
        return self._clients[name]

    @property
    def iot(self):
        return self.client("iot")

    @property
    def iam(self):
        return self.client("iam")

    def account(self):
        """The account id (sts:GetCallerIdentity needs no permission)."""
        with self.errors("the caller's identity"):
            return self.client("sts").get_caller_identity()["Account"]

    def errors(self, resource=None, hint=""):
        """A context that turns botocore's exceptions into one AwsError line."""
        return _translated(self, resource, hint)

    def scrub(self, text):
        """text without the session's credentials (key id, secret, token) in it."""
        text = _KEY_ID.sub("<access key id>", str(text))
        try:
            creds = self.session.get_credentials()
            frozen = creds.get_frozen_credentials() if creds else None
        except Exception:  # a broken credential source: nothing of it can be in the text
            frozen = None
        for secret in (frozen.secret_key, frozen.token, frozen.access_key) if frozen else ():
            if secret:
                text = text.replace(secret, "<redacted>")
        return text


@contextlib.contextmanager
def _translated(aws, resource, hint):
    import botocore.exceptions as bx

    where = f" in {aws.region}"
    what = f" for {resource}" if resource else ""
    try:
        yield
    except bx.ClientError as e:
        err = e.response.get("Error", {})
        code = err.get("Code", "Error")
        service = _SERVICE_OF.get(getattr(e, "operation_name", ""), "iot")
        action = f"{service}:{e.operation_name}"
        message = aws.scrub(err.get("Message", ""))[:300]
        if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedException",
                    "UnauthorizedOperation") or code.endswith("AccessDenied"):
            advice = f"{aws.who} needs {action}{_ALSO.get(action, '')}"
        elif code in ("ResourceNotFoundException", "NoSuchEntity"):
            advice = f"{message or 'not found'}{'; ' + hint if hint else ''}"
        elif code in ("ThrottlingException", "Throttling", "LimitExceededException"):
            advice = f"{message or 'throttled'}: wait a minute and run it again"
        elif code in ("UnrecognizedClientException", "InvalidClientTokenId",
                      "ExpiredTokenException", "ExpiredToken", "SignatureDoesNotMatch"):
            advice = (f"{aws.who} are not valid here (expired, wrong secret, or another "
                      "partition): refresh them (`aws sso login`, `aws configure`)")
        else:
            advice = f"{message}{'; ' + hint if hint else ''}"
        raise AwsError(f"{code} on {action}{where}{what}: {advice}") from None
    except bx.NoCredentialsError:
        raise AwsError(f"no AWS credentials found{' for ' + repr(aws.profile) if aws.profile else ''}"
                       ": run `aws configure` (or `aws sso login`), set AWS_PROFILE, or pass "
                       "--profile") from None
    except bx.PartialCredentialsError:
        raise AwsError("AWS credentials are incomplete (a key id without its secret, or the "
                       "reverse): fix ~/.aws/credentials or the AWS_* variables") from None
    except bx.EndpointConnectionError as e:
        raise AwsError(f"cannot reach AWS{where} ({aws.scrub(getattr(e, 'kwargs', {}).get('endpoint_url', ''))}): "
                       "check the network, a proxy, and that the region name is right") from None
    except bx.NoRegionError:
        raise AwsError("no AWS region: pass --region (e.g. eu-west-1), or set AWS_REGION") from None
    except bx.ParamValidationError as e:
        raise AwsError(f"AWS refuses the request{what}{where}: {aws.scrub(e)}") from None


class _Where:
    # what errors() knows before (or without) a session: the region and profile asked for
    def __init__(self, region, profile):
        self.region, self.profile = region or "the default region", profile
        self.who = f"the profile {profile!r}" if profile else "your AWS credentials"

    def scrub(self, text):
        import os

        text = _KEY_ID.sub("<access key id>", str(text))
        for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
            if os.environ.get(var):
                text = text.replace(os.environ[var], "<redacted>")
        return text


def errors(region=None, profile=None):
    """errors() of a session not made yet: for a whole command."""
    return _translated(_Where(region, profile), None, "")


# IAM and STS operations (everything else upcert calls is AWS IoT).
_SERVICE_OF = {op: "iam" for op in ("CreateRole", "GetRole", "AttachRolePolicy",
                                    "ListAttachedRolePolicies", "PassRole")}
_SERVICE_OF["GetCallerIdentity"] = "sts"
