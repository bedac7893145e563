"""upcert's TLS client (firmware/upcert/tls12.py) run by CPython against recorded server flights.

A flight is every byte a real OpenSSL server (CPython's ssl) sent to the client in one whole
session: ServerHello .. ServerHelloDone, ChangeCipherSpec, the encrypted Finished, one
application record ("pong") and its close. The client's randoms come from a seeded stand-in
for os.urandom (fwload.device), so replaying the flight to the client with the same seed makes
it send the same bytes, and the recorded Finished verifies: an unmutated replay completes the
handshake. Everything goes through the public face (tls12.TlsClient, TlsError), so the test
keeps working when the client's internals move.
"""

import hashlib
import signal
import socket
import tracemalloc
from contextlib import contextmanager

from tests.fuzz import fwload

SEED = 20261202  # the client's randoms in recording and replay
ALERTS = {0, 10, 20, 22, 40, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 70, 71, 80, 90, 100,
          110, 120}
TIME_LIMIT_S = 10.0  # wall clock (the machine may be busy); a whole handshake takes 0.05-0.3 s
# Traced peak of one handshake under CPython (objects several times their size on the device):
# 1.3 MB measured, 2.6 MB when a mutation doubles the server's chain; most of it the chain's
# and P-256's modules imported again after each handshake dropped them, as on the device. A
# length field obeyed without its bound (a 16 MB handshake message, say) goes past it.
MEM_LIMIT = 6 * 1024 * 1024


class Failure(Exception):
    """The client misbehaved on a flight: the message says how."""


class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so the client's `except Exception` cannot eat it."""


@contextmanager
def _time_limit(seconds):
    def ring(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def urandom(seed=SEED):
    """A deterministic os.urandom for one handshake: the stream SHA-256(seed || counter), a
    block after another (the unix-port replay makes the same stream with its own hashlib)."""
    state = {"buf": b"", "n": 0}

    def take(k):
        while len(state["buf"]) < k:
            block = hashlib.sha256(b"%d:%d" % (seed, state["n"])).digest()
            state["buf"] += block
            state["n"] += 1
        out, state["buf"] = state["buf"][:k], state["buf"][k:]
        return out

    return take


class Scripted:
    """The socket the client reads a flight from: readinto gives at most steps[i] bytes on the
    i-th call (the last step repeats), then EOF; writes are kept; close() is noted."""

    def __init__(self, data, steps=(4096,)):
        self.data, self.steps = bytes(data), list(steps) or [4096]
        self.i = self.calls = 0
        self.sent = bytearray()
        self.closed = False

    def settimeout(self, s):
        pass

    def setblocking(self, flag):
        pass

    def write(self, b):
        if self.closed:
            raise OSError(9, "EBADF")
        self.sent += bytes(b)
        return len(b)

    def readinto(self, mv):
        if self.closed:
            raise OSError(9, "EBADF")
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        n = max(0, min(len(mv), step, len(self.data) - self.i))
        mv[:n] = self.data[self.i:self.i + n]
        self.i += n
        return n

    def close(self):
        self.closed = True


class _Recording:
    """A connected CPython socket with the device socket's face, keeping what it reads."""

    def __init__(self, sock):
        self.sock, self.got = sock, bytearray()

    def settimeout(self, s):
        self.sock.settimeout(s)

    def setblocking(self, flag):
        self.sock.setblocking(flag)

    def write(self, b):
        return self.sock.send(b)

    def readinto(self, mv):
        n = self.sock.recv_into(mv)
        self.got += mv[:n]
        return n

    def close(self):
        self.sock.close()


def record(port, roots, identity, now):
    """The flight a server on 127.0.0.1:port sends the firmware client (run by CPython with
    the seeded randoms) in a session: handshake, "ping" -> "pong", close."""
    sock = _Recording(socket.create_connection(("127.0.0.1", port), timeout=10))
    with fwload.device(urandom()) as imp:
        tls12 = imp("upcert.tls12")
        c = tls12.TlsClient(sock, "localhost", roots, now, identity, timeout_s=10)
        c.write(b"ping")
        got = b""
        while len(got) < 4:
            d = c.read(4 - len(got))
            if not d:
                break
            got += d
        c.close()
    if got != b"pong":
        raise AssertionError(f"the recorded session ended early: {got!r}")
    return bytes(sock.got)


def records(data):
    """[(type, version minor, body)] of a stream, strictly; ValueError when it is not whole."""
    out, i = [], 0
    while i < len(data):
        if i + 5 > len(data):
            raise ValueError("truncated record header")
        n = int.from_bytes(data[i + 3:i + 5], "big")
        if i + 5 + n > len(data):
            raise ValueError("truncated record")
        out.append((data[i], data[i + 2], bytes(data[i + 5:i + 5 + n])))
        i += 5 + n
    return out


def join(recs, version=3):
    return b"".join(bytes((t, 3, v if v is not None else version)) + len(b).to_bytes(2, "big")
                    + b for t, v, b in recs)


def meaning(data):
    """What a correct TLS 1.2 client hashes and checks of a server flight up to the server's
    Finished, or None when a client must refuse it: the server's handshake messages before
    ChangeCipherSpec (HelloRequests left out: RFC 5246 §7.4.1.1, never hashed; warning alerts
    skipped: §7.2), the ChangeCipherSpec, and the first (encrypted) record after it, the
    Finished. Record boundaries and the record version's minor byte carry no meaning."""
    i, hs = 0, b""
    while True:
        if i + 5 > len(data):
            return None
        t, major, n = data[i], data[i + 1], int.from_bytes(data[i + 3:i + 5], "big")
        body = data[i + 5:i + 5 + n]
        if major != 3 or t not in (20, 21, 22, 23) or n > 16384 or len(body) < n or not n:
            return None
        i += 5 + n
        if t == 21:
            if n != 2 or body[0] != 1 or body[1] in (0, 100):  # only plain warnings go on
                return None
            continue
        if t == 22:
            hs += body
            continue
        if t == 23:
            return None
        break  # ChangeCipherSpec
    ccs = bytes(body)
    msgs, j = [], 0
    while j < len(hs):
        if j + 4 > len(hs):
            return None
        m = int.from_bytes(hs[j + 1:j + 4], "big")
        if j + 4 + m > len(hs):
            return None
        if hs[j] != 0:
            msgs.append(bytes(hs[j:j + 4 + m]))
        j += 4 + m
    if i + 5 > len(data) or data[i + 1] != 3:
        return None
    n = int.from_bytes(data[i + 3:i + 5], "big")
    if i + 5 + n > len(data):
        return None
    return msgs, ccs, data[i], bytes(data[i + 5:i + 5 + n])


def handshake(flight, steps=(4096,), *, roots, identity, now, seed=SEED, memory=True):
    """Replay a flight to the client: {"ok": True, "got": ...} (the handshake completed; got:
    what read() gave after "ping" was sent: bytes, or "TlsError ...") or {"ok": False,
    "alert", "received", "reason", "error"}; raise Failure on anything else: another
    exception, a hang past TIME_LIMIT_S, a peak allocation over MEM_LIMIT, an error without
    a reason, a refusal that leaves the socket open or does not send its alert."""
    sock = Scripted(flight, steps)
    tracing = memory and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with fwload.device(urandom(seed)) as imp, _time_limit(TIME_LIMIT_S):
            tls12 = imp("upcert.tls12")
            try:
                c = tls12.TlsClient(sock, "localhost", roots, now, identity, timeout_s=1)
            except tls12.TlsError as e:
                out = {"ok": False, "alert": e.alert, "received": e.received,
                       "reason": e.reason, "error": str(e)}
            else:
                out = {"ok": True, "cipher": c.cipher()[0], "got": _after(c, tls12)}
        peak = tracemalloc.get_traced_memory()[1] - base
    except _Timeout:
        raise Failure(f"hang: no answer within {TIME_LIMIT_S} s") from None
    except Failure:
        raise
    except Exception as e:
        raise Failure(f"{type(e).__name__} escaped the client: {e}") from e
    finally:
        if tracing:
            tracemalloc.stop()
    if memory and peak > MEM_LIMIT:
        raise Failure(f"allocated {peak} bytes at the peak (limit {MEM_LIMIT})")
    if not out["ok"]:
        if not out["error"] or not isinstance(out["reason"], int):
            raise Failure(f"TlsError without a reason: {out}")
        if not sock.closed:
            raise Failure(f"refused but the socket is still open: {out}")
        if out["received"]:  # the server's alert (any number) or close_notify: nothing to send
            return out
        if out["alert"] is None:
            if out["reason"] != 2:  # CLOSED: the stream ended, no one to tell
                raise Failure(f"a refusal without an alert while the server is there: {out}")
            return out
        if out["alert"] not in ALERTS:
            raise Failure(f"TlsError with an alert that does not exist: {out}")
        # the client's last record is its alert (plaintext before ChangeCipherSpec: its
        # bytes; after it, its type)
        last = records(sock.sent)[-1]
        if last[0] != 21 or (len(last[2]) == 2 and last[2] != bytes((2, out["alert"]))):
            raise Failure(f"the alert {out['alert']} was not sent: last record {last[:2]}")
    return out


def _after(c, tls12):
    # "ping" out, then what comes back: bytes, or the TlsError that ended it
    try:
        c.write(b"ping")
        got = b""
        while len(got) < 4:
            d = c.read(4 - len(got))
            if not d:
                break
            got += d
        c.close()
        return got
    except tls12.TlsError as e:
        return "TlsError %s %s" % (e.alert, e.reason)
