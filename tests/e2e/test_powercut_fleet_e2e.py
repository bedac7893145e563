"""Power cuts during the rotation a board runs itself, its key in an emulated ATECC608, over Fleet
Provisioning on the local stand-in (tests/host/test_powercut_atecc.py cuts the host-driven one).

Each run is a fresh board (a blank chip, locked and provisioned for a thing of its own) on one
shared stand-in. A rotation job starts the rotation: a new key in a spare chip slot (GenKey), the
CSR signed by the chip, CreateCertificateFromCsr, the checks, stage, RegisterThing, the trial
connection with the new slot's key, commit, the first acknowledged telemetry (proven), the job's
SUCCEEDED. An uncut run counts what the cut points are: the board's flash writes (stage, commit,
proven) and the chip's commands with their flash-write stamps (the GenKey that changes the
EEPROM, then the trial connection's handshake), so nothing here hard-codes a count that could go
stale. Then every point is cut in a run of its own: after the Nth flash write, after the Nth chip
command (the bridge holds its reply, so the board never sees it), and on the network, after the
CSR was sent and before any reply (the stand-in's service stopped meanwhile). The board restarts
on the same flash and chip and must connect with one identity (old or new, its certificate for
the key in its active key slot, which mosquitto checks in the handshake and this test on the
chip), answer a ping, leave no certificate ACTIVE in the registry that it does not hold (a stage
discarded at boot is reported and set INACTIVE, whether RegisterThing had activated it or not),
and rotate again: the job cut short runs again after the reboot, or a new one does.
"""

import json
import os
import re
import shutil
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.tools import require, require_plugin_build, wait_until

WORKERS = 4  # boards at once: each waits on the network, its pty and the chip most of the time
PHASES = ("files", "staged", "trial", "proven")  # what a cut after a flash write leaves
POWERON = "rst:0x1 (POWERON_RESET)"
# The board's own account of a reboot in the middle of a rotation (rotation.py).
DISCARDED = "staged pair from before the reboot discarded"
ON_TRIAL = "not proven yet"
CONNECTED = re.compile(r"upcert: connected .* cert ([0-9a-f]{16}) ")
# After the cut: the active identity, the chip's public key of its key slot, the idle slot.
READ = """
from upcert.store_journal import Journal
s = store()
slot = s.key_slot()
idle = Journal(s).idle()
out = {'cert': h(s.certificate()), 'slot': slot, 'pub': h(chip().public_key(slot)),
       'idle': h(idle[0]) if idle else None, 'describe': s.describe()}
"""


def _point(cert_der):
    return x509.load_der_x509_certificate(cert_der).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _cid(der):
    import hashlib

    return hashlib.sha256(der).hexdigest()


class Matrix:
    """One run per cut point, each on a fresh board and thing, on the shared stand-in."""

    def __init__(self, tmp, ca, cloud):
        from upcert.cloud.registry import Registry

        self.tmp, self.ca, self.cloud = tmp, ca, cloud
        self.reg = Registry(cloud.registry_path)
        self.service = threading.Lock()  # one run at a time may stop the stand-in's service

    def run(self, kind, n=0):
        """The rotation with a power cut at (kind, n): "write" after the board's nth flash
        write, "chip" after the chip's nth command, "csr" after the CSR was sent (no reply),
        "none" uncut. Returns what the run saw (a dict)."""
        from upcert.emu.board import EmulatedBoard

        board = EmulatedBoard(self.tmp / f"{kind}-{n}", atecc608="blank")
        board.start()
        try:
            return self._run(board, kind, n)
        except Exception as exc:
            raise AssertionError(f"cut {kind} {n}: {exc}\n--- serial.log tail ---\n"
                                 f"{board.log_text()[-2500:]}") from exc
        finally:
            board.stop()

    def _run(self, board, kind, n):
        from upcert.board.chip import make_chip_config, provision_chip
        from upcert.cloud import admin
        from upcert.cloud.standin import Subscription

        thing = f"pc-{kind}-{n}-{uuid.uuid4().hex[:6]}"
        cfg = make_chip_config(thing, f"localhost:{self.cloud.port}",
                               extra={"telemetry_interval_s": 2, "keepalive_s": 30,
                                      "fleet": {"timeout_s": 15}},
                               wifi=("upcert-lab", "test-password"))
        seen = {"thing": thing}
        with Subscription(self.cloud, f"things/{thing}/#") as sub:
            res = provision_chip(board.port, cfg, self.ca.directory, lock=True,
                                 log=lambda m: None, registry=self.reg)
            old = seen["old"] = res.cert_id
            self._telemetry(sub, old)
            cuts = board.power_cuts()
            board.arm_power_cut(n if kind == "write" else 0)  # both counts restart at 0
            board.arm_chip_cut(n if kind == "chip" else 0)
            mark = board.log_size()
            job = None
            if kind == "csr":
                self._cut_after_csr(board, sub, thing)
            else:
                job = admin.create_rotation_job(self.cloud.state_dir, thing)
            if kind != "none":
                wait_until(lambda: board.power_cuts() > cuts or kind == "csr", 90,
                           "the armed power cut")
                seen.update(self._after_cut(board, mark))
            if job is None:  # no job was cut short: one for the rotation that must still work
                job = admin.create_rotation_job(self.cloud.state_dir, thing)
            new = self._succeeded(job)
            if kind != "none" and "rotation: done" not in board.log_since(seen["boot"]):
                # the job ended without a new rotation (cut after the commit): one more
                new = self._succeeded(admin.create_rotation_job(self.cloud.state_dir, thing))
            if kind == "none":
                seen["writes"] = board.write_count()
                seen["chip"] = board.chip_commands()["trace"]
            seen["ping"] = self._ping(sub, thing)
            seen["cert_id"] = self._telemetry(sub, new)
        seen.update(self._check(board, cfg, thing, seen["cert_id"]))
        return seen

    def _telemetry(self, sub, cert_id, timeout_s=90):
        # Telemetry from the certificate cert_id arrives: cert_id.
        sub.wait_for(lambda m: m.topic.endswith("/telemetry")
                     and json.loads(m.payload)["cert_id"] == cert_id, timeout_s)
        return cert_id

    def _ping(self, sub, thing):
        cid = uuid.uuid4().hex[:8]
        sub.client.publish(f"things/{thing}/commands", json.dumps({"cmd": "ping", "id": cid}),
                           qos=1)
        m = sub.wait_for(lambda m: m.topic.endswith("/replies") and json.loads(m.payload).get(
            "id") == cid, 60)
        return json.loads(m.payload)["ok"]

    def _succeeded(self, job):
        # The rotation job ends SUCCEEDED: the new certificate's id (its statusDetails).
        wait_until(lambda: self.reg.get_job(job)["status"] in ("SUCCEEDED", "FAILED"), 150,
                   f"job {job} ended")
        got = self.reg.get_job(job)
        assert got["status"] == "SUCCEEDED", got
        return got["status_details"]["newCertificateId"]

    def _cut_after_csr(self, board, sub, thing):
        # The service stopped (SIGSTOP): the rotation command's CSR reaches the broker (the
        # identity plugin copies it to upcert/from/<thing>/...) and nobody answers; the power is
        # cut then, and the service resumes: it issues a certificate the board never hears of.
        from upcert.cloud.standin import Subscription

        with self.service:
            pid = int((self.cloud.state_dir / "provisioning.pid").read_text())
            topic = f"upcert/from/{thing}/$aws/certificates/create-from-csr/json"
            with Subscription(self.cloud, topic) as req:
                os.kill(pid, signal.SIGSTOP)
                try:
                    sub.client.publish(f"things/{thing}/commands",
                                       json.dumps({"cmd": "rotate", "id": "pc-rotate"}), qos=1)
                    req.wait_for(None, 60)
                    board.power_cut()
                finally:
                    os.kill(pid, signal.SIGCONT)
        wait_until(lambda: any(r["status"] == "PENDING_ACTIVATION"
                               for r in self.reg.list(thing)), 30,
                   "the stand-in issued the certificate whose reply was lost")

    def _after_cut(self, board, mark):
        # What the board said at its first boot after the cut (from byte `boot` of its log): the
        # identity it connected with, a stage it discarded, an identity still on trial.
        board.wait_for_log(POWERON, 30, since=mark)
        start = mark + board.log_path.read_bytes()[mark:].index(POWERON.encode())
        text = board.wait_for_log(CONNECTED, 90, since=start)
        return {"boot": start, "connected": CONNECTED.search(text).group(1),
                "discarded": DISCARDED in text, "on_trial": ON_TRIAL in text}

    def _check(self, board, cfg, thing, cert_id):
        # On the board (the agent stopped): the active certificate is for the chip's key in
        # the active key slot; in the registry, every ACTIVE certificate of the thing is held.
        from upcert.board.chip import run_code
        from upcert.board.provision import CONFIG_PATH
        from upcert.board.transport import Board

        with Board(board.port) as b:
            got = run_code(b, READ, "reading the store", store=cfg["store"],
                           config_path=CONFIG_PATH)
        cert = bytes.fromhex(got["cert"])
        assert _point(cert) == b"\x04" + bytes.fromhex(got["pub"]), (
            f"mixed: the certificate is not for the key in slot {got['slot']}")
        d = got["describe"]
        assert _cid(cert) == cert_id, f"the board holds {_cid(cert)}, not {cert_id}: {d}"
        assert "error" not in d and "recovered" not in d and not d["staged"], d
        held = {_cid(cert)} | ({_cid(bytes.fromhex(got["idle"]))} if got["idle"] else set())
        status = {r["cert_id"]: r["status"] for r in self.reg.list(thing)}
        active = {c for c, s in status.items() if s == "ACTIVE"}
        assert active <= held and _cid(cert) in active, (
            f"certificates ACTIVE but not held by the board: {sorted(active - held)}; "
            f"registry {status}")
        return {"slot": got["slot"], "registry": status}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    require("micropython")
    require("mpremote")
    require_plugin_build()
    from upcert.cloud.standin import Cloud
    from upcert.pki.ca import LocalCa

    tmp = tmp_path_factory.mktemp("powercut_fleet")
    ca = LocalCa.init(tmp / "ca")  # RSA: issued certificates keep one size, and flash writes
    cloud = Cloud(tmp / "cloud", ca).up()
    yield Matrix(tmp, ca, cloud)
    cloud.down()


def _chip_points(trace, writes):
    """The chip commands to cut after, from the uncut run's trace: the GenKey that made the new
    key (the one EEPROM change) and every command of the trial connection (after the stage's
    flash writes, before the commit's). Checks the trace has those phases."""
    genkeys = [t for t in trace if t["eeprom"]]
    assert [(t["cmd"], t["p1"]) for t in genkeys] == [("GenKey", 4)], trace
    new_slot = genkeys[0]["p2"]
    assert genkeys[0]["writes"] == 0, f"the new key is made before anything is staged: {trace}"
    trial = [t for t in trace if 0 < t["writes"] < writes]
    assert trial, f"no chip command between the stage and the commit (the trial): {trace}"
    assert len({t["writes"] for t in trial}) == 1, f"flash writes during the trial: {trial}"
    names = [(t["cmd"], t["p2"]) for t in trial]
    # The handshake's ECDHE on the chip (RFC 8422 §5.10), then the CertificateVerify signed by
    # the new key (RFC 5246 §7.4.8).
    assert "ECDH" in [c for c, _ in names], names
    assert ("Sign", new_slot) in names, f"the trial is not signed with slot {new_slot}: {names}"
    assert all(t["writes"] in (0, trial[0]["writes"]) for t in trace), trace
    return [genkeys[0]["n"]] + [t["n"] for t in trial], new_slot, trial[0]["writes"]


def _retired(cloud, seen):
    """{point: [the status each certificate the board reported at boot had before the stand-in
    set it INACTIVE]}, from the service's log."""
    text = (cloud.state_dir / "provisioning.log").read_text()
    rx = re.compile(r"rotation abandoned at step 'reboot': (\S+) abandoned certificate "
                    r"[0-9a-f]{16} \((\w+)\): set INACTIVE")
    by_thing = {}
    for thing, status in rx.findall(text):
        by_thing.setdefault(thing, []).append(status)
    return {p: by_thing.get(got["thing"], []) for p, got in seen.items()}


def _phase(seen):
    # What a cut left, from the board's first boot after it.
    new = seen["connected"] != seen["old"][:16]
    if seen["on_trial"]:
        assert new, seen
        return "trial"
    if new:
        return "proven"
    return "staged" if seen["discarded"] else "files"


def test_power_cut_matrix_of_an_on_device_chip_rotation_over_fleet_provisioning(matrix):
    started = time.monotonic()
    base = matrix.run("none")
    writes, trace = base["writes"], base["chip"]
    assert base["cert_id"] != base["old"] and base["ping"] is True, base
    assert writes >= 3, f"stage, commit and proven each write the flash: {writes} writes"
    chip_points, new_slot, staged_at = _chip_points(trace, writes)
    assert base["slot"] == new_slot, base
    points = ([("write", n) for n in range(1, writes + 1)]
              + [("chip", n) for n in chip_points] + [("csr", 0)])
    lock = threading.Lock()
    seen = {}

    def one(point):
        got = matrix.run(*point)
        assert got["ping"] is True, got
        with lock:
            seen[point] = got
        shutil.rmtree(matrix.tmp / f"{point[0]}-{point[1]}", ignore_errors=True)

    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(one, p) for p in points]
    errors = [str(f.exception()) for f in futures if f.exception()]
    assert not errors, "\n\n".join(errors)

    phases = [_phase(seen["write", n]) for n in range(1, writes + 1)]
    retired = _retired(matrix.cloud, seen)
    print(f"\non-device chip rotation: {writes} flash writes, after each cut: {phases}; chip "
          f"commands cut {chip_points} of {len(trace)} "
          f"({[(t['cmd'], t['p2']) for t in trace]}), leaving "
          f"{[_phase(seen['chip', n]) for n in chip_points]}; CSR without a reply: "
          f"{_phase(seen['csr', 0])}; stages discarded at boot, their certificates before the "
          f"report: {[(p, r) for p, r in retired.items() if r]}; {len(points) + 1} runs in "
          f"{time.monotonic() - started:.0f} s")
    # Each phase is reached, in order, and each flips once: the cut points cover the rotation.
    assert phases == sorted(phases, key=PHASES.index), phases
    assert {"staged", "trial", "proven"} <= set(phases), phases
    assert phases[staged_at - 1] == "staged", f"the trial begins after write {staged_at}"
    # A stage discarded at boot was reported and its certificate set INACTIVE (the registry
    # check above); what it was before says where the cut fell: before RegisterThing (pending)
    # or after it (ACTIVE, the case that must never be left behind).
    staged = [("write", n) for n in range(1, writes + 1) if phases[n - 1] == "staged"]
    order = [retired[p] for p in staged]
    assert all(len(r) == 1 for r in order), dict(zip(staged, order, strict=True))
    order = [r[0] for r in order]
    assert order == sorted(order, key=("PENDING_ACTIVATION", "ACTIVE").index), order
    assert {retired["chip", n][0] for n in chip_points[1:]} == {"ACTIVE"}, retired
    assert "ACTIVE" in order and "PENDING_ACTIVATION" in order, order
    assert not any(retired[p] for p in seen if _phase(seen[p]) != "staged"), retired
    # The new key, the trial connection: the old identity, the stage discarded after the trial.
    assert _phase(seen["chip", chip_points[0]]) == "files", seen["chip", chip_points[0]]
    assert {_phase(seen["chip", n]) for n in chip_points[1:]} == {"staged"}
    assert _phase(seen["csr", 0]) == "files"
