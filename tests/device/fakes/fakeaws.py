# A broker playing AWS IoT Core for device tests, over FakeSock: MQTT 3.1.1 parsed from the byte
# stream (a packet may span writes), the Fleet Provisioning MQTT API (certificates signed by a
# testca.TestCa) and the Jobs MQTT API for one thing. Like AWS it replies only to subscribers.
import hashlib
import json

from fakesock import FakeSock, publish_packet
from testca import pem, read_csr
from upcert import p256
from upcert.der import hexstr
from upcert.errors import REFUSED, CertificateError, ConnectError
from upcert.x509 import Certificate

CSR = "$aws/certificates/create-from-csr/json"
PENDING = ("IN_PROGRESS", "QUEUED")


def _length(buf):
    # Bytes of the first complete MQTT packet in buf, 0 if incomplete (MQTT 3.1.1 §2.2.3).
    n, mult, i = 0, 1, 1
    while True:
        if i >= len(buf) or i > 4:
            return 0
        n += (buf[i] & 0x7F) * mult
        mult *= 128
        i += 1
        if not buf[i - 1] & 0x80:
            break
    return i + n if len(buf) >= i + n else 0


def _str(p, i):
    n = p[i] << 8 | p[i + 1]
    return p[i + 2 : i + 2 + n].decode(), i + 2 + n


class FakeAws:
    """events: ("connect", client_id), ("sub", topic), ("pub", topic, payload), ("disconnect",)
    in order over every connection. certs: certificateId -> status. jobs: list of dicts (jobId,
    document (JSON-able, or bytes: JSON text sent as it is), status, version, details); updates: (jobId, status) accepted, in order; a job
    reaching a final status is followed by notify-next, as AWS does. Knobs: reject (statusCode, errorCode, message) for
    create-from-csr, silent (no Fleet Provisioning replies), wrong_key (a point put in issued
    certificates), alg, validity_s, connack, inject (packets sent before the next reply),
    no_jobs (no Jobs service), reject_jobs (code, message) for start-next."""

    def __init__(self, ca, clock, thing="dev1", validity_s=365 * 86400):
        self.ca = ca
        self.clock = clock
        self.thing = thing
        self.validity_s = validity_s
        self.templates = ("upcert-rotation",)
        self.events = []
        self.certs = {}
        self.tokens = {}
        self.jobs = []
        self.issued = []
        self.subjects = []
        self.reject = None
        self.silent = False
        self.wrong_key = None
        self.alg = None  # signature AlgorithmIdentifier DER for issued certificates
        self.connack = 0
        self.inject = []  # packets sent before the reply to the next AWS request
        self.no_jobs = False  # a broker without the Jobs service: no Jobs replies at all
        self.reject_jobs = None  # (code, message): start-next rejected
        self.updates = []  # (jobId, status) of every accepted UpdateJobExecution, in order
        self.sock = None
        self._pid = 0

    def socket(self, *args):
        """A new connection (FakeSock); the latest one is self.sock."""
        rx = [b""]
        sock = FakeSock()
        sock.subs = set()

        def reply(data):
            rx[0] += bytes(data)
            out = b""
            while True:
                n = _length(rx[0])
                if not n:
                    return out
                p, rx[0] = rx[0][:n], rx[0][n:]
                out += self._packet(p, sock)

        sock.reply = reply
        self.sock = sock
        return sock

    def published(self, prefix=""):
        """[(topic, payload)] of every PUBLISH from devices whose topic starts with prefix."""
        return [(e[1], e[2]) for e in self.events if e[0] == "pub" and e[1].startswith(prefix)]

    def _packet(self, p, sock):
        kind = p[0] & 0xF0
        i = 1
        while p[i] & 0x80:
            i += 1
        i += 1  # start of the variable header
        if kind == 0x10:
            cid = _str(p, i + 10)[0]  # after name, level, flags, keepalive (§3.1.2)
            self.events.append(("connect", cid))
            return b"\x20\x02\x00" + bytes([self.connack])
        if kind == 0x80:
            topic = _str(p, i + 2)[0]
            self.events.append(("sub", topic))
            sock.subs.add(topic)
            return b"\x90\x03" + p[i : i + 2] + b"\x01"
        if kind == 0xC0:
            return b"\xd0\x00"
        if kind == 0xE0:
            self.events.append(("disconnect",))
            return b""
        if kind != 0x30:
            return b""  # PUBACK for our QoS 1 replies
        topic, j = _str(p, i)
        out = b""
        if p[0] & 0x06:
            out = b"\x40\x02" + p[j : j + 2]
            j += 2
        payload = p[j:]
        self.events.append(("pub", topic, payload))
        return out + self._aws(topic, payload, sock)

    def _send(self, sock, topic, body):
        # AWS delivers a reply only to a client subscribed to its topic (Developer Guide, "Device provisioning MQTT API").
        if topic not in sock.subs:
            return b""
        self._pid = self._pid % 65535 + 1
        data = json.dumps(body).encode()
        for j in self.jobs:  # a document given as JSON text goes in as it is
            if type(j["document"]) is bytes:
                data = data.replace(b'"\\u0000doc:%s"' % j["jobId"].encode(), j["document"])
        return publish_packet(topic, data, qos=1, pid=self._pid)

    def _aws(self, topic, payload, sock):
        out = b"".join(self.inject) if topic.startswith("$aws/") else b""
        if out:
            self.inject = []
        return out + self._answer(topic, payload, sock)

    def _answer(self, topic, payload, sock):
        if topic == CSR:
            return b"" if self.silent else self._csr(sock, json.loads(payload))
        if topic.startswith("$aws/provisioning-templates/"):
            return b"" if self.silent else self._register(sock, topic, json.loads(payload))
        pre = "$aws/things/%s/jobs/" % self.thing
        if topic.startswith(pre):
            return self._job(sock, topic, topic[len(pre) :], json.loads(payload))
        return b""

    def _csr(self, sock, req):
        if self.reject:
            code, err, msg = self.reject
            body = {"statusCode": code, "errorCode": err, "errorMessage": msg}
            return self._send(sock, CSR + "/rejected", body)
        subject, point = read_csr(req["certificateSigningRequest"])
        self.subjects.append(subject)
        now = self.clock.now()
        point = self.wrong_key or point
        if self.alg:
            cert = self.ca.issue(self.thing, point, now - 60, now + self.validity_s, self.alg)
        else:
            cert = self.ca.issue(self.thing, point, now - 60, now + self.validity_s)
        cid = hexstr(hashlib.sha256(cert).digest())
        self.certs[cid] = "PENDING_ACTIVATION"  # AWS: until RegisterThing
        self.issued.append(cert)
        tok = "token-" + cid[:12]
        self.tokens[tok] = cid
        body = {"certificateId": cid, "certificatePem": pem(cert), "certificateOwnershipToken": tok}
        return self._send(sock, CSR + "/accepted", body)

    def _register(self, sock, topic, req):
        tpl = topic.split("/")[2]
        cid = self.tokens.pop(req.get("certificateOwnershipToken"), None)
        bad = None
        if tpl not in self.templates:
            bad = (404, "ResourceNotFound", "template %s does not exist" % tpl)
        elif cid is None:
            bad = (400, "InvalidToken", "unknown or used ownership token")
        elif req.get("parameters", {}).get("ThingName") != self.thing:
            bad = (403, "Forbidden", "ThingName is not yours")
        if bad:
            body = {"statusCode": bad[0], "errorCode": bad[1], "errorMessage": bad[2]}
            return self._send(sock, topic + "/rejected", body)
        self.certs[cid] = "ACTIVE"
        body = {"deviceConfiguration": {}, "thingName": self.thing}
        return self._send(sock, topic + "/accepted", body)

    def add_job(self, job_id, document, status="QUEUED", version=1, details=None):
        self.jobs.append(
            {
                "jobId": job_id,
                "document": document,
                "status": status,
                "version": version,
                "details": details or {},
            }
        )

    def job(self, job_id):
        return [j for j in self.jobs if j["jobId"] == job_id][0]

    def next_job(self):
        for status in PENDING:
            for j in self.jobs:
                if j["status"] == status:
                    return j
        return None

    def execution(self, j):
        doc = j["document"]
        return {
            "jobId": j["jobId"],
            "thingName": self.thing,
            "jobDocument": "\x00doc:" + j["jobId"] if type(doc) is bytes else doc,
            "status": j["status"],
            "versionNumber": j["version"],
            "statusDetails": j["details"],
            "executionNumber": 1,
            "queuedAt": 1,
        }

    def _next(self):
        # NextJobExecutionChanged: the next pending job, no "execution" when there is none.
        j = self.next_job()
        body = {"timestamp": 2}
        if j:
            body["execution"] = self.execution(j)
        return body

    def notify(self):
        """The notify-next PUBLISH for the next pending job (feed it to self.sock)."""
        topic = "$aws/things/%s/jobs/notify-next" % self.thing
        return publish_packet(topic, json.dumps(self._next()).encode())

    def _job(self, sock, topic, rest, req):
        tok = req.get("clientToken")
        if self.no_jobs:
            return b""
        if rest == "start-next" and self.reject_jobs:
            body = {"code": self.reject_jobs[0], "message": self.reject_jobs[1], "clientToken": tok}
            return self._send(sock, topic + "/rejected", body)
        if rest == "start-next":
            j = self.next_job()
            body = {"clientToken": tok, "timestamp": 3}
            if j:
                if j["status"] == "QUEUED":
                    j["status"] = "IN_PROGRESS"
                    j["version"] += 1
                    j["details"] = req.get("statusDetails") or j["details"]
                body["execution"] = self.execution(j)
            return self._send(sock, topic + "/accepted", body)
        parts = rest.split("/")
        if len(parts) != 2 or parts[1] != "update":
            return b""
        js = [j for j in self.jobs if j["jobId"] == parts[0]]
        err = None
        if not js:
            err = ("ResourceNotFound", "no such job")
        elif req.get("expectedVersion", js[0]["version"]) != js[0]["version"]:  # optional
            err = ("VersionMismatch", "expected %s" % js[0]["version"])
        elif js[0]["status"] not in PENDING:
            err = ("InvalidStateTransition", "terminal")
        if err:
            body = {"code": err[0], "message": err[1], "clientToken": tok}
            return self._send(sock, topic + "/rejected", body)
        j = js[0]
        j["status"] = req["status"]
        j["details"] = req.get("statusDetails") or j["details"]
        j["version"] += 1
        self.updates.append((j["jobId"], j["status"]))
        out = self._send(sock, topic + "/accepted", {"clientToken": tok, "timestamp": 4})
        if j["status"] not in PENDING:  # AWS: NextJobExecutionChanged, to its subscribers
            out += self._send(sock, "$aws/things/%s/jobs/notify-next" % self.thing, self._next())
        return out

    def connector(self, calls=None):
        """connector(cert_der, key_der, roots=None) -> connect(host, port), as app.py builds it: refuses a
        key that does not match the certificate (as mbedTLS would) and, at connect, a
        certificate that is not ACTIVE (the TLS handshake fails). Appends "tls" to calls."""

        def make(cert_der, key_der, roots=None):
            c = Certificate(cert_der)
            if p256.Key.from_der(key_der).public_point() != c.public_key:
                raise CertificateError("private key does not match the certificate")

            def connect(host, port):
                if calls is not None:
                    calls.append("tls")
                if self.certs.get(c.cert_id(), "ACTIVE") != "ACTIVE":
                    raise ConnectError(
                        "%s:%s closed the connection in the TLS handshake: broker rejected our"
                        " certificate (inactive)" % (host, port),
                        REFUSED,
                    )
                return self.socket()

            return connect

        return make
