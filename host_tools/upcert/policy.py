"""The AWS IoT policies upcert uses, as policy documents (base layer: imports nothing of upcert but
errors), and their translation into a mosquitto ACL, so that the local stand-in enforces the very
document `upcert aws setup` gives AWS.

Device policy: a thing connects only under its own client id and uses only `things/<thing>/...`,
its own `$aws/things/<thing>/jobs/...` and the Fleet Provisioning topics of the rotation template
and of CreateCertificateFromCsr (AWS IoT Developer Guide: "Connection policy variables", "Fleet
provisioning: device provisioning MQTT API", "Jobs device MQTT API"). Claim policy: a claim
certificate can connect and call CreateCertificateFromCsr and the claim template, nothing else.
No wildcard actions; each resource is scoped by region and account. Also the rotation job's
document, which AWS IoT Jobs and the stand-in's jobs hand the device alike.
"""

import datetime
import json
import os

from upcert.errors import UpcertError

THING = "${iot:Connection.Thing.ThingName}"  # the thing the certificate is attached to
ROTATION_TEMPLATE = "upcert-rotation"  # firmware/upcert/config.py's default fleet.template
CLAIM_TEMPLATE = "upcert-claim"
DEVICE_POLICY = "upcert-device"
CLAIM_POLICY = "upcert-claim"
CSR_API = "$aws/certificates/create-from-csr"
FORMATS = ("json", "cbor")  # the payload formats of the Fleet Provisioning MQTT API


ROTATE_DOCUMENT = {"operation": "rotate-certificate"}  # what the device agent reacts to


def rotation_job_id(thing):
    """A job id for a rotation of `thing` (AWS: [a-zA-Z0-9_-]{1,64})."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"rotate-{str(thing).replace(':', '-')[:32]}-{stamp}-{os.urandom(2).hex()}"


class PolicyError(UpcertError):
    """A policy document that the stand-in cannot enforce as written."""


def template_api(template):
    """The RegisterThing topic prefix of a provisioning template."""
    return f"$aws/provisioning-templates/{template}/provision"


def _fleet_topics(apis):
    """(request topics, reply topics) of Fleet Provisioning APIs, every payload format."""
    requests = [f"{api}/{fmt}" for api in apis for fmt in FORMATS]
    return requests, [f"{t}/{end}" for t in requests for end in ("accepted", "rejected")]


def _arn(region, account, kind, name):
    return f"arn:aws:iot:{region}:{account}:{kind}/{name}"


def _statements(region, account, connect, publish, receive):
    # iot:Subscribe is on topic filters, iot:Publish and iot:Receive on topics (AWS IoT
    # Developer Guide, "AWS IoT Core policy actions"); a device subscribes to what it receives.
    topic = [_arn(region, account, "topic", t) for t in publish]
    return [
        {"Sid": "Connect", "Effect": "Allow", "Action": "iot:Connect",
         "Resource": _arn(region, account, "client", connect)},
        {"Sid": "Publish", "Effect": "Allow", "Action": "iot:Publish", "Resource": topic},
        {"Sid": "Subscribe", "Effect": "Allow", "Action": "iot:Subscribe",
         "Resource": [_arn(region, account, "topicfilter", t) for t in receive]},
        {"Sid": "Receive", "Effect": "Allow", "Action": "iot:Receive",
         "Resource": [_arn(region, account, "topic", t) for t in receive]},
    ]


def device_policy(region, account, templates=(ROTATION_TEMPLATE,)):
    """The device policy document (a dict) for the account's region; templates: the rotation
    template(s) a device may call RegisterThing with."""
    own = [f"things/{THING}/*", f"$aws/things/{THING}/jobs/*"]
    req, rep = _fleet_topics([CSR_API, *(template_api(t) for t in templates)])
    return {"Version": "2012-10-17",
            "Statement": _statements(region, account, THING, own + req, own + rep)}


def claim_policy(region, account, claim_template=CLAIM_TEMPLATE):
    """The claim policy document: connect (under any client id: a claiming device has no
    thing yet), CreateCertificateFromCsr and RegisterThing of the claim template, nothing else."""
    req, rep = _fleet_topics([CSR_API, template_api(claim_template)])
    return {"Version": "2012-10-17",
            "Statement": _statements(region, account, "*", req, rep)}


def text(document):
    """A policy document as AWS stores it (stable JSON text, for comparing versions)."""
    return json.dumps(document, indent=2, sort_keys=True)


# ---- the stand-in's ACL ----------------------------------------------------------------------
_ACCESS = {"iot:Publish": "write", "iot:Receive": "read", "iot:Subscribe": "read"}


def _topic(resource):
    # arn:aws:iot:<region>:<account>:topic/<name> -> an MQTT topic filter for mosquitto:
    # the thing variable is the certificate's CN (%u), a trailing "/*" is "/#". Anything else
    # that AWS would read as a wildcard cannot be translated faithfully: refused.
    kind, _, name = resource.split(":", 5)[-1].partition("/")
    if kind not in ("topic", "topicfilter"):
        raise PolicyError(f"{resource}: not a topic resource")
    name = name.replace(THING, "%u")
    if name.endswith("/*"):
        name = name[:-2] + "/#"
    if "*" in name or "?" in name or "${" in name:
        raise PolicyError(f"{resource}: a wildcard or variable the stand-in cannot enforce")
    return name


def topic_access(document):
    """{MQTT topic filter: 'read'|'write'|'readwrite'} that the document allows (Allow
    statements of iot:Publish/Receive/Subscribe; iot:Connect is the identity plugin's job)."""
    got = {}
    for st in document["Statement"]:
        if st.get("Effect") != "Allow":
            raise PolicyError(f"statement {st.get('Sid')}: only Allow statements are translated")
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for action in actions:
            if action == "iot:Connect":
                continue
            if action not in _ACCESS:
                raise PolicyError(f"action {action}: not one the stand-in enforces")
            for r in resources:
                t = _topic(r)
                got.setdefault(t, set()).add(_ACCESS[action])
    return {t: "readwrite" if a == {"read", "write"} else a.pop() for t, a in got.items()}


def mosquitto_acl(device_doc, admin_cn, claim_doc=None, claim_cns=()):
    """mosquitto acl_file text (mosquitto.conf(5) acl_file) enforcing device_doc for every
    client by its certificate CN, the admin identity unrestricted, and, for each CN in
    claim_cns, claim_doc instead: the device topics denied (mosquitto checks denials first),
    the claim topics allowed."""
    device = topic_access(device_doc)
    lines = ["# written by upcert (host_tools/upcert/cloud/standin.py) from the device policy "
             "of host_tools/upcert/policy.py; devices by certificate CN (%u)"]
    lines += [f"pattern {a} {t}" for t, a in device.items()]
    if claim_cns:
        claim = topic_access(claim_doc)
        for cn in claim_cns:
            if not cn or any(c in cn for c in " \n\t+#/%"):
                raise PolicyError(f"claim identity {cn!r}: not a certificate CN the ACL can name")
            lines.append(f"user {cn}")
            lines += [f"topic deny {t.replace('%u', '+')}" for t in device if t not in claim]
            lines += [f"topic {a} {t}" for t, a in claim.items()]
    lines += ["# the host's own identity (subscriber, provisioning service) reads and writes "
              "everything", f"user {admin_cn}", "topic readwrite #", "topic readwrite $aws/#",
              "topic read $SYS/#", ""]
    return "\n".join(lines)
