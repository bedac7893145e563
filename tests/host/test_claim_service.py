"""Provisioning by claim in the stand-in's provisioning service (no broker): which identity may
use which template, and what a claim may ask for (AWS IoT developer guide, "Provisioning by
claim"; the claim policy allows nothing but CreateCertificateFromCsr and the claim template)."""

import json

import pytest
from upcert.cloud import service as provisioning
from upcert.cloud.registry import Registry

from tests.host.test_provisioning import CSR_TOPIC, PROVISION_TOPIC, make_csr


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    from upcert.pki.ca import LocalCa

    return LocalCa.init(tmp_path_factory.mktemp("ca"))

CLAIM_TOPIC = "$aws/provisioning-templates/upcert-claim/provision/json"
CLAIM_USER = "newboard@claim-batch"  # what the identity plugin makes of a claim's connection


def _ask(prov, user, topic, body):
    out, _ = prov.handle(f"{provisioning.FROM}{user}/{topic}", json.dumps(body).encode())
    [(reply_topic, data)] = out
    assert reply_topic.startswith(f"{provisioning.TO}{user}/{topic}/")  # to the asker only
    return reply_topic.rsplit("/", 1)[1], json.loads(data)


def _certificate(prov, user, cn):
    outcome, r = _ask(prov, user, CSR_TOPIC, {"certificateSigningRequest": make_csr(cn)[0]})
    assert outcome == "accepted", r
    return r


def test_requester_tells_claims_from_things():
    assert provisioning.requester("dev1") == ("dev1", False)
    assert provisioning.requester("dev1@claim-batch") == ("dev1", True)
    assert provisioning.requester("dev1@other") == ("dev1@other", False)  # not a claim CN


def test_a_claim_gets_the_thing_it_connects_as(ca, tmp_path):
    reg = Registry(tmp_path / "r.sqlite3")
    prov = provisioning.Provisioner(ca, reg)
    r = _certificate(prov, CLAIM_USER, "newboard")
    assert reg.get(r["certificateId"])["status"] == "PENDING_ACTIVATION"
    outcome, done = _ask(prov, CLAIM_USER, CLAIM_TOPIC, {
        "certificateOwnershipToken": r["certificateOwnershipToken"],
        "parameters": {"ThingName": "newboard", "Batch": "b7"}})
    assert (outcome, done["thingName"]) == ("accepted", "newboard")
    assert reg.get(r["certificateId"])["status"] == "ACTIVE"
    assert reg.get_thing("newboard")["attributes"]["Batch"] == "b7"


def test_what_a_claim_may_not_do(ca, tmp_path):
    reg = Registry(tmp_path / "r.sqlite3")
    prov = provisioning.Provisioner(ca, reg)
    # a certificate for another name than the client id it connected as
    outcome, r = _ask(prov, CLAIM_USER, CSR_TOPIC,
                      {"certificateSigningRequest": make_csr("victim")[0]})
    assert (outcome, r["statusCode"]) == ("rejected", 403)
    assert "a board claims the thing it connects as" in r["errorMessage"]
    good = _certificate(prov, CLAIM_USER, "newboard")
    token = good["certificateOwnershipToken"]
    # the rotation template: for things with their own certificate
    outcome, r = _ask(prov, CLAIM_USER, PROVISION_TOPIC, {"certificateOwnershipToken": token})
    assert (outcome, r["statusCode"]) == ("rejected", 403) and "not for a claim" in \
        r["errorMessage"]
    # another thing's name as ThingName
    outcome, r = _ask(prov, CLAIM_USER, CLAIM_TOPIC, {"certificateOwnershipToken": token,
                                                      "parameters": {"ThingName": "victim"}})
    assert (outcome, r["statusCode"]) == ("rejected", 403)
    # the token of one board's certificate, used by another board of the batch
    outcome, r = _ask(prov, "other@claim-batch", CLAIM_TOPIC, {
        "certificateOwnershipToken": token, "parameters": {"ThingName": "other"}})
    assert (outcome, r["statusCode"]) == ("rejected", 403)
    assert reg.get(good["certificateId"])["status"] == "PENDING_ACTIVATION"
    assert reg.get_thing("victim") is None


def test_a_thing_may_not_use_the_claim_template(ca, tmp_path):
    reg = Registry(tmp_path / "r.sqlite3")
    prov = provisioning.Provisioner(ca, reg)
    r = _certificate(prov, "dev9", "dev9")
    outcome, rej = _ask(prov, "dev9", CLAIM_TOPIC, {
        "certificateOwnershipToken": r["certificateOwnershipToken"],
        "parameters": {"ThingName": "dev9"}})
    assert (outcome, rej["statusCode"]) == ("rejected", 403)
    assert "claim certificates only" in rej["errorMessage"]
