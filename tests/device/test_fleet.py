# Device tests for upcert.fleet: exact topics and JSON payloads of CreateCertificateFromCsr and
# RegisterThing, subscribe-before-publish, accepted / rejected / timeout, and other messages
# passed on to the agent's callback. A FakeAws broker signs real certificates (testca).
import hashlib
import json
from time import ticks_diff, ticks_ms

from agentfakes import FakeClock
from checks import eq, raises, true
from fakeaws import CSR, FakeAws
from fakesock import publish_packet
from testca import TestCa, key
from upcert import csr, fleet
from upcert.der import hexstr, pem_to_der
from upcert.errors import RotationError
from upcert.mqtt import Client
from upcert.x509 import Certificate

TPL = "$aws/provisioning-templates/upcert-rotation/provision/json"


def _setup():
    aws = FakeAws(TestCa(), FakeClock())
    client = Client("dev1")
    got = []
    client.set_callback(lambda t, m: got.append((t, m)))
    client.connect(aws.socket())
    signer = key("device")
    pem = csr.pem(csr.build(signer, [("CN", "dev1")]))
    return aws, client, got, signer, pem


def test_create_from_csr_accepted():
    aws, client, _, signer, pem = _setup()
    cid, cpem, token = fleet.create_from_csr(client, pem, 2000)
    eq(
        aws.events[1:4],
        [
            ("sub", CSR + "/accepted"),
            ("sub", CSR + "/rejected"),
            ("pub", CSR, json.dumps({"certificateSigningRequest": pem}).encode()),
        ],
        "subscribe to both replies, then publish the CSR",
    )
    eq(json.loads(aws.events[3][2]), {"certificateSigningRequest": pem}, "payload")
    der = pem_to_der(cpem)
    eq(cid, hexstr(hashlib.sha256(der).digest()), "certificateId is sha256 of the DER")
    eq(Certificate(der).public_key, signer.public_point(), "certificate for our key")
    eq(token, "token-" + cid[:12], "ownership token")
    eq(aws.certs[cid], "PENDING_ACTIVATION", "not active before RegisterThing")


def test_create_from_csr_empties_the_holder_once_sent():
    # The rotation passes its list: the CSR text leaves it once sent, so that it is free while
    # AWS's reply is awaited (the reply is the issue step's largest block).
    aws, client, _, _, pem = _setup()
    k = [pem, "key"]
    seen = []
    service = client.service

    def watched():
        seen.append(k[0])
        return service()

    client.service = watched
    cid = fleet.create_from_csr(client, k, 2000)[0]
    eq(aws.events[3][2], json.dumps({"certificateSigningRequest": pem}).encode(), "CSR sent")
    true(seen and all(x is None for x in seen), "gone from the holder while waiting: %r" % seen)
    eq(k, [None, "key"], "only the CSR taken")
    eq(aws.certs[cid], "PENDING_ACTIVATION", "issued")


def test_register_thing_activates():
    aws, client, _, _, pem = _setup()
    cid, _, token = fleet.create_from_csr(client, pem, 2000)
    r = fleet.register_thing(client, "upcert-rotation", token, {"ThingName": "dev1"}, 2000)
    eq(r, {"deviceConfiguration": {}, "thingName": "dev1"}, "accepted reply")
    eq(aws.events[-3:-1], [("sub", TPL + "/accepted"), ("sub", TPL + "/rejected")], "subs")
    eq(aws.events[-1][:2], ("pub", TPL), "topic")
    eq(
        json.loads(aws.events[-1][2]),
        {"certificateOwnershipToken": token, "parameters": {"ThingName": "dev1"}},
        "payload",
    )
    eq(aws.certs[cid], "ACTIVE", "activated")


def test_rejections_carry_code_and_message():
    aws, client, _, _, pem = _setup()
    aws.reject = (400, "InvalidCsr", "the CSR's key is not accepted")
    raises(
        RotationError,
        fleet.create_from_csr,
        client,
        pem,
        2000,
        contains="CreateCertificateFromCsr rejected: 400 InvalidCsr: the CSR's key is not accepted",
    )
    aws.reject = None
    raises(
        RotationError,
        fleet.register_thing,
        client,
        "nope",
        "token-x",
        {"ThingName": "dev1"},
        2000,
        contains="RegisterThing(nope) rejected: 404 ResourceNotFound: template nope does not exist",
    )
    _, _, token = fleet.create_from_csr(client, pem, 2000)
    e = raises(
        RotationError,
        fleet.register_thing,
        client,
        "upcert-rotation",
        token,
        {"ThingName": "dev2"},
        2000,
    )
    true("403 Forbidden" in str(e), str(e))


def test_timeout():
    aws, client, _, _, pem = _setup()
    aws.silent = True
    prev = client.cb
    t0 = ticks_ms()
    raises(
        RotationError,
        fleet.create_from_csr,
        client,
        pem,
        300,
        contains="no reply to $aws/certificates/create-from-csr/json in 300 ms",
    )
    dt = ticks_diff(ticks_ms(), t0)
    true(300 <= dt < 2000, "waited %d ms" % dt)
    true(client.cb is prev, "the agent's callback is back")


def test_other_messages_reach_the_agent_callback():
    aws, client, got, _, pem = _setup()
    cmd = publish_packet("things/dev1/commands", b'{"cmd": "ping"}')
    late = publish_packet(CSR + "/accepted", b'{"stale": 1}')
    aws.inject = [cmd]
    fleet.create_from_csr(client, pem, 2000)
    eq(got, [(b"things/dev1/commands", b'{"cmd": "ping"}')], "command passed on")
    aws.sock.feed(late)
    client.service()
    eq(got[-1], (CSR.encode() + b"/accepted", b'{"stale": 1}'), "callback restored after")


def test_bad_replies():
    aws, client, _, _, pem = _setup()
    aws.silent = True
    aws.inject = [publish_packet(CSR + "/accepted", b"[1]")]
    raises(
        RotationError,
        fleet.create_from_csr,
        client,
        pem,
        2000,
        contains="reply on $aws/certificates/create-from-csr/json is not a JSON object",
    )
    aws.inject = [publish_packet(CSR + "/accepted", b'{"certificateId": "x"}')]
    raises(
        RotationError,
        fleet.create_from_csr,
        client,
        pem,
        2000,
        contains="CreateCertificateFromCsr: accepted reply lacks 'certificatePem'",
    )


def test_request_matches_client_token():
    aws, client, _, _, _ = _setup()
    topic = "$aws/things/dev1/jobs/start-next"
    aws.inject = [
        publish_packet(topic + "/accepted", b'{"clientToken": "t-12", "n": 1}'),
        publish_packet(topic + "/accepted", b'{"clientToken": "t-1", "n": 2}'),
    ]
    r = fleet.request(client, "jobs start-next", topic, {"clientToken": "t-1"}, 2000, "t-1")
    eq(r["n"], 2, "the reply with our token, not t-12's")
