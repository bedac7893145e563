"""The AWS IoT policies of upcert.policy and their translation into the stand-in's mosquitto ACL:
least privilege as AWS reads the documents, and the ACL saying exactly the same."""

import pytest
from upcert import policy
from upcert.cloud.standin import acl_text

REGION, ACCOUNT = "eu-west-1", "123456789012"


def _resources(doc):
    for st in doc["Statement"]:
        res = st["Resource"]
        yield from ([res] if isinstance(res, str) else res)


@pytest.mark.parametrize("doc", [policy.device_policy(REGION, ACCOUNT),
                                 policy.claim_policy(REGION, ACCOUNT)])
def test_no_wildcard_actions_and_every_resource_scoped(doc):
    actions = [st["Action"] for st in doc["Statement"]]
    assert sorted(actions) == ["iot:Connect", "iot:Publish", "iot:Receive", "iot:Subscribe"]
    assert all(st["Effect"] == "Allow" for st in doc["Statement"])
    for r in _resources(doc):
        assert r.startswith(f"arn:aws:iot:{REGION}:{ACCOUNT}:"), r


def test_device_policy_is_the_things_own_topics_and_fleet_provisioning():
    doc = policy.device_policy(REGION, ACCOUNT)
    thing = "${iot:Connection.Thing.ThingName}"
    arn = f"arn:aws:iot:{REGION}:{ACCOUNT}:"
    connect = [st for st in doc["Statement"] if st["Action"] == "iot:Connect"][0]
    assert connect["Resource"] == arn + f"client/{thing}"
    publish = [st for st in doc["Statement"] if st["Action"] == "iot:Publish"][0]["Resource"]
    assert set(publish) == {arn + f"topic/things/{thing}/*", arn + f"topic/$aws/things/{thing}/jobs/*",
                            arn + "topic/$aws/certificates/create-from-csr/json",
                            arn + "topic/$aws/certificates/create-from-csr/cbor",
                            arn + "topic/$aws/provisioning-templates/upcert-rotation/provision/json",
                            arn + "topic/$aws/provisioning-templates/upcert-rotation/provision/cbor"}
    # the only wildcards: the tail of the thing's own topics (AWS's "*" matches any characters)
    starred = [r for r in _resources(doc) if "*" in r]
    assert all(r.endswith(f"{thing}/*") or r.endswith(f"{thing}/jobs/*") for r in starred)


def test_claim_policy_can_only_ask_for_a_certificate():
    doc = policy.claim_policy(REGION, ACCOUNT)
    topics = {r.split(":", 5)[-1] for r in _resources(doc)} - {"client/*"}
    assert all("create-from-csr" in t or "/upcert-claim/provision/" in t for t in topics)
    assert not any("things/" in t or "upcert-rotation" in t for t in topics)


def test_acl_is_the_device_policy():
    acl = acl_text(["upcert-rotation", "upcert-claim"]).splitlines()
    assert "pattern readwrite things/%u/#" in acl
    assert "pattern readwrite $aws/things/%u/jobs/#" in acl
    assert "pattern write $aws/certificates/create-from-csr/json" in acl
    assert "pattern read $aws/certificates/create-from-csr/json/accepted" in acl
    assert not any("upcert-claim" in line for line in acl)  # devices never call the claim template
    patterns = [line for line in acl if line.startswith("pattern")]
    assert len(patterns) == len(policy.topic_access(policy.device_policy(REGION, ACCOUNT)))


@pytest.mark.parametrize("resource", [
    "arn:aws:iot:r:1:topic/things/*/telemetry",          # a wildcard mid-topic
    "arn:aws:iot:r:1:topic/$aws/things/${iot:ClientId}/x",  # another variable
    "arn:aws:iot:r:1:client/x",                           # not a topic
])
def test_untranslatable_policies_are_refused(resource):
    doc = {"Statement": [{"Effect": "Allow", "Action": "iot:Publish", "Resource": resource}]}
    with pytest.raises(policy.PolicyError):
        policy.topic_access(doc)


def test_deny_and_unknown_actions_are_refused():
    with pytest.raises(policy.PolicyError, match="only Allow"):
        policy.topic_access({"Statement": [{"Effect": "Deny", "Action": "iot:Publish",
                                            "Resource": "arn:aws:iot:r:1:topic/x"}]})
    with pytest.raises(policy.PolicyError, match="iot:\\*"):
        policy.topic_access({"Statement": [{"Effect": "Allow", "Action": "iot:*",
                                            "Resource": "arn:aws:iot:r:1:topic/x"}]})
