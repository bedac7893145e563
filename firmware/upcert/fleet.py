# AWS IoT Fleet Provisioning MQTT API (developer guide, "Device provisioning MQTT API"):
# CreateCertificateFromCsr and RegisterThing over an already connected upcert.mqtt.Client, and
# the subscribe-first request/reply helper that the Jobs API (jobs.py) shares.
import json
from time import sleep_ms, ticks_add, ticks_diff, ticks_ms

from micropython import const

from upcert.errors import PROTOCOL, REJECTED, TIMEOUT, RotationError

CSR_TOPIC = "$aws/certificates/create-from-csr/json"
_POLL_MS = const(10)


def request(client, what, topic, body, timeout_ms, token=None, want=()):
    """Publish body (a dict, sent as JSON) to topic; return the accepted reply (a dict).

    Subscribes to topic/accepted and topic/rejected first (AWS sends replies only to current
    subscribers). client: upcert.mqtt.Client (subscribe, publish, service, set_callback, cb);
    other messages go on to its callback. token: a clientToken the reply must carry. what:
    the request's name for messages. RotationError for a rejection (with AWS's codes and
    message: Fleet Provisioning statusCode, errorCode, errorMessage; Jobs code, message), no
    reply within timeout_ms, a reply that is not a JSON object or lacks a field of want.
    """
    acc = topic + "/accepted"
    rej = topic + "/rejected"
    client.subscribe(acc, 1, timeout_ms)
    client.subscribe(rej, 1, timeout_ms)
    a, r = acc.encode(), rej.encode()
    if type(body) is list:  # a holder: emptied, so that the body is free once sent
        body = body.pop()
    tok = b'"%s"' % token if token else b""  # quoted: token "t-1" must not match "t-12"
    got = []
    prev = client.cb

    def cb(t, m):
        # Inside the client's wait_msg: only keep the message (first reply wins).
        if (t == a or t == r) and not got and tok in m:
            got.append(t == a)
            got.append(m)
        else:
            prev(t, m)

    client.set_callback(cb)
    try:
        client.publish(topic, json.dumps(body), qos=1, timeout_ms=timeout_ms)
        body = None  # the CSR text: free it while waiting
        end = ticks_add(ticks_ms(), timeout_ms)
        while not got:
            if ticks_diff(end, ticks_ms()) <= 0:
                raise RotationError("no reply to %s in %d ms" % (topic, timeout_ms), TIMEOUT)
            client.service()
            sleep_ms(_POLL_MS)
    finally:
        client.set_callback(prev)
    return reply(what, topic, got[0], got[1], want)


def reply(what, topic, ok, raw, want=()):
    """The reply raw (bytes) on topic/accepted (ok) or topic/rejected as a dict; RotationError
    for a rejection (AWS's codes and message), a reply that is not a JSON object, or an
    accepted one that lacks a field of want."""
    try:
        r = json.loads(raw)
    except ValueError:
        r = None
    if type(r) is not dict:
        raise RotationError("reply on %s is not a JSON object" % topic, PROTOCOL)
    if not ok:
        code = r.get("errorCode") or r.get("code")
        if "statusCode" in r:
            code = "%s %s" % (r["statusCode"], code)
        raise RotationError(
            "%s rejected: %s: %s" % (what, code, r.get("errorMessage") or r.get("message")),
            REJECTED,
        )
    for n in want:
        if n not in r:
            raise RotationError("%s: accepted reply lacks %r" % (what, n), PROTOCOL)
    return r


def create_from_csr(client, csr_pem, timeout_ms=30000):
    """CreateCertificateFromCsr: (certificateId, certificatePem, certificateOwnershipToken).

    csr_pem: PKCS#10 PEM text (upcert.csr.pem), or a list holding it first, whose item is set
    to None here: the text is then free once sent, while AWS's reply is awaited (an argument
    stays alive in the caller until the call returns). A rejection raises RotationError with
    AWS's statusCode, errorCode and errorMessage; so does a timeout.
    """
    want = ("certificateId", "certificatePem", "certificateOwnershipToken")
    if type(csr_pem) is list:  # the body in a holder too: request() empties it once sent
        body = [{"certificateSigningRequest": csr_pem[0]}]
        csr_pem[0] = None
    else:
        body = {"certificateSigningRequest": csr_pem}
    r = request(client, "CreateCertificateFromCsr", CSR_TOPIC, body, timeout_ms, None, want)
    return r[want[0]], r[want[1]], r[want[2]]


def register_thing(client, template, token, parameters, timeout_ms=30000):
    """RegisterThing with a provisioning template: attaches and activates the certificate whose
    ownership token this is. parameters: dict of str, e.g. {"ThingName": "dev1"}. Returns the
    accepted reply {"deviceConfiguration", "thingName"}; a rejection raises RotationError."""
    topic = "$aws/provisioning-templates/%s/provision/json" % template
    body = {"certificateOwnershipToken": token, "parameters": parameters}
    what = "RegisterThing(%s)" % template
    return request(client, what, topic, body, timeout_ms, None, ("thingName",))
