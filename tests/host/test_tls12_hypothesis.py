"""upcert's TLS client (firmware/upcert/tls12.py) fuzzed with hypothesis on CPython, against the
same firmware code (tests/fuzz/fwload.py runs it with CPython stand-ins for `micropython` and
`cryptolib`): real server flights recorded once per session from OpenSSL (CPython's ssl; an
ECDHE-ECDSA AES-GCM session and an ECDHE-RSA AES-CBC one), replayed to the public TlsClient
over a scripted socket with the client's randoms of the recording, so an unmutated flight
completes the handshake. Mutations: tests/fuzz/tlsmutate.py.

Properties (tests/fuzz/tlsflight.py): the handshake completes, or raises TlsError with a
reason and an existing alert (sent, then the socket closed), within 10 s and 6 MB of allocation
(CPython's objects); never another exception or a hang. It completes exactly when the flight
keeps every byte a client hashes or decrypts (`tlsflight.meaning`): any other change is refused.
A derandomized sample is then replayed on the MicroPython unix port, whose verdicts must be
CPython's. `tests/host/test_tls12_fuzz.py` replays 600 seeded mutations on the unix port.
"""

import json
import os
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from upcert.pki.ca import LocalCa
from upcert.pki.certs import generate_key

from tests.fuzz import tlsflight, tlsmutate
from tests.host.test_tls12_interop import PyServer
from tests.tools import ROOT, micropython_cmd, require

DER = serialization.Encoding.DER
SUITES = {"ec": "ECDHE-ECDSA-AES128-GCM-SHA256", "rsa": "ECDHE-RSA-AES128-SHA256"}


def fuzz(n, **kw):
    """Hypothesis settings: n examples; tlsflight's own time limit replaces the deadline."""
    return settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck),
                    **kw)


class Session(dict):
    """A recorded flight and what replaying it needs (short repr: hypothesis prints it)."""

    def __repr__(self):
        return f"<session {self['suite']}, {len(self['flight'])}-byte flight>"


@pytest.fixture(scope="module")
def flights(tmp_path_factory):
    """{kind: Session}: one per suite in SUITES."""
    out = {}
    for kind, suite in SUITES.items():
        ca = LocalCa.init(tmp_path_factory.mktemp(f"ca-{kind}"), key_type=kind)
        key = generate_key("ec")
        cert = ca.issue_device("tls-dev", key.public_key())
        session = Session({
            "roots": [ca.certificate.public_bytes(DER)],
            "identity": (cert.public_bytes(DER),
                         key.private_bytes(DER, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())),
            "now": time.time(),
            "suite": suite,
        })
        srv = PyServer(ca, cipher=suite)
        session["flight"] = tlsflight.record(srv.port, session["roots"], session["identity"],
                                             session["now"])
        srv.join()
        assert srv.error is None and srv.cipher == suite, srv.error
        session["meaning"] = tlsflight.meaning(session["flight"])
        assert session["meaning"] is not None
        out[kind] = session
    return out


def replay(session, data, steps=(4096,), **kw):
    return tlsflight.handshake(data, steps, roots=session["roots"],
                               identity=session["identity"], now=session["now"], **kw)


@pytest.mark.parametrize("kind", list(SUITES))
def test_a_recorded_flight_replays_to_a_whole_session(flights, kind):
    s = flights[kind]
    want = {"ok": True, "cipher": "TLS-" + {"ec": "ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
                                             "rsa": "ECDHE-RSA-WITH-AES-128-CBC-SHA256"}[kind],
            "got": b"pong"}
    assert replay(s, s["flight"]) == want
    assert replay(s, s["flight"], [1]) == want  # a byte per read
    # other randoms: the server's signature covers the client's random, so it fails there
    other = replay(s, s["flight"], seed=1)
    assert (other["alert"], other["received"]) == (51, False), other


@fuzz(30)
@given(st.data())
def test_a_flight_cut_differently_still_completes(flights, data):
    s = flights[data.draw(st.sampled_from(list(SUITES)))]
    flight, steps, harmless, _ = data.draw(tlsmutate.harmless(s["flight"]))
    assert harmless and tlsflight.meaning(flight) == s["meaning"]
    out = replay(s, flight, steps, memory=False)  # the allocation bound: the test below
    assert out["ok"] and out["got"] == b"pong", out


def _malformed(flights, data, memory):
    s = flights[data.draw(st.sampled_from(list(SUITES)))]
    flight, steps, _, label = data.draw(tlsmutate.malformed(s["flight"]))
    out = replay(s, flight, steps, memory=memory)  # tlsflight.Failure on a misbehaviour
    same = tlsflight.meaning(flight) == s["meaning"]
    event("completed" if out["ok"] else f"alert {out['alert']}, reason {out['reason']}")
    assert out["ok"] == same, (label, out, "the flight keeps the handshake" if same else
                               "the flight changes what the client hashes or decrypts")


@fuzz(300)
@given(st.data())
def test_malformed_flights_end_in_tls_errors(flights, data):
    _malformed(flights, data, memory=False)


@fuzz(40)
@given(st.data())
def test_malformed_flights_within_the_allocation_bound(flights, data):
    # the same with tracemalloc on (4x slower, so fewer examples)
    _malformed(flights, data, memory=True)


# Unix-port replay: the client under MicroPython, with the same seeded randoms (os swapped in
# sys.modules before tls12 imports it), and the same verdicts.
REPLAY = r"""
import hashlib, json, sys

class Rand:
    # tlsflight.urandom: SHA-256(seed || counter) blocks, consumed as one stream
    def __init__(self, seed):
        self.seed, self.n, self.buf = seed, 0, b""
    def urandom(self, k):
        while len(self.buf) < k:
            self.buf += hashlib.sha256(b"%d:%d" % (self.seed, self.n)).digest()
            self.n += 1
        out, self.buf = self.buf[:k], self.buf[k:]
        return out

class Scripted:
    def __init__(self, data, steps):
        self.d, self.i, self.steps, self.calls, self.closed = data, 0, steps, 0, False
    def settimeout(self, s):
        pass
    def setblocking(self, f):
        pass
    def write(self, b):
        return len(b)
    def readinto(self, mv):
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        n = max(0, min(len(mv), step, len(self.d) - self.i))
        mv[:n] = self.d[self.i:self.i + n]
        self.i += n
        return n
    def close(self):
        self.closed = True

a = json.load(open(sys.argv[1]))
rand = Rand(a["seed"])
sys.modules["os"] = rand
from upcert import tls12
out = []
for s in a["sessions"]:
    s["roots"] = [bytes.fromhex(r) for r in s["roots"]]
    s["identity"] = (bytes.fromhex(s["cert"]), bytes.fromhex(s["key"]))
for k, h, steps in a["cases"]:
    s = a["sessions"][k]
    rand.n, rand.buf = 0, b""
    sock = Scripted(bytes.fromhex(h), steps)
    try:
        tls12.TlsClient(sock, "localhost", s["roots"], s["now"], s["identity"], timeout_s=1)
        out.append(["ok"])
    except tls12.TlsError as e:
        out.append([e.alert, e.received, e.reason, sock.closed])
    except Exception as e:
        out.append(["BUG", "%s: %s" % (type(e).__name__, e)])
print("RESULT " + json.dumps(out))
"""


def test_a_sample_replayed_on_the_unix_port_gets_the_same_verdicts(flights, tmp_path):
    require("micropython")
    kinds = list(SUITES)
    cases = []

    @fuzz(80, derandomize=True, database=None, phases=[Phase.generate])
    @given(st.integers(0, 1), st.data())
    def collect(k, data):
        s = flights[kinds[k]]
        flight, steps, _, _ = data.draw(st.one_of(tlsmutate.malformed(s["flight"]),
                                                  tlsmutate.harmless(s["flight"])))
        cases.append((k, flight, steps))

    collect()
    cases += [(k, flights[kinds[k]]["flight"], [4096]) for k in range(2)]
    want = []
    for k, flight, steps in cases:
        out = replay(flights[kinds[k]], flight, steps, memory=False)
        want.append(["ok"] if out["ok"] else [out["alert"], out["received"], out["reason"],
                                              True])
    sessions = [{"roots": [r.hex() for r in flights[k]["roots"]],
                 "cert": flights[k]["identity"][0].hex(), "key": flights[k]["identity"][1].hex(),
                 "now": flights[k]["now"]} for k in kinds]
    args = tmp_path / "cases.json"
    args.write_text(json.dumps({"seed": tlsflight.SEED, "sessions": sessions,
                                "cases": [(k, f.hex(), st_) for k, f, st_ in cases]}))
    os.chmod(args, 0o600)  # holds the throwaway device keys
    (tmp_path / "replay.py").write_text(REPLAY)
    proc = subprocess.run(micropython_cmd("4M") + [str(tmp_path / "replay.py"), str(args)],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, MICROPYPATH=str(ROOT / "firmware")))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    got = json.loads(lines[-1][7:])
    assert len(got) == len(cases)
    differ = [(i, want[i], got[i]) for i in range(len(cases)) if want[i] != got[i]]
    assert not differ, differ[:10]
    assert got[-2:] == [["ok"], ["ok"]]  # the unmutated flights complete there too
    verdicts = {json.dumps(v) for v in got}
    assert len(verdicts) > 8, verdicts  # the sample reaches many different checks
