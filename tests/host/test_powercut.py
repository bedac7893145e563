"""Power cut after every flash write of a credential rotation, on the emulated board.

For each store kind (fs, nvs, partition): identity A provisioned, then stage(B), commit(),
stage(C), commit(), rollback() (back to B), each step a separate exec. An uncut run counts the writes W and where each
step ends; then for every n in 1..W the board restarts from the same flash snapshot, is armed to
lose power right after its nth write, runs the steps, reboots, and the store must read one whole
identity (the certificate's public key is the private key's) that the cut point allows, and
a new rotation (stage A, commit) must then succeed: nothing a cut left behind may block it.
"""

import json
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from upcert.board import firmware
from upcert.board.transport import Board
from upcert.emu import config as emulator_config
from upcert.emu.board import EmulatedBoard
from upcert.errors import UpcertError
from upcert.pki import certs
from upcert.pki.ca import LocalCa

from tests.tools import require, wait_until

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "boards" / "esp32_generic" / "partitions.csv"
KINDS = {
    "fs": {"kind": "fs"},
    "nvs": {"kind": "nvs", "namespace": "upcert"},
    "partition": {"kind": "partition", "label": "upcert"},
}
STATE_FILES = ("flash.img", "nvs.bin", "part-upcert.bin", "board.json")
OK = "STEP" + "-OK"  # never in the code sent, only in what the board prints
# Booted again after a cut (disarmed): the power-on banner, then the REPL's.
REBOOTED = re.compile(r"POWERON_RESET[^\0]*Type \"help\(\)\"")

PROVISION = """
import board, binascii, esp32, os
for cfg in {kinds!r}:
    board.store({{"store": cfg}}).write(binascii.unhexlify({cert!r}), binascii.unhexlify({key!r}))
os.remove('/main.py')  # each reboot should reach the REPL at once
print('provisioned')
"""
STEP = """
import board, binascii
s = board.store({{"store": {cfg!r}}})
{op}
print('STEP' + '-OK')
"""
READ = """
import board, binascii, json
s = board.store({{"store": {cfg!r}}})
print(binascii.hexlify(s.certificate()).decode())
print(binascii.hexlify(s.private_key()).decode())
print(json.dumps(s.describe()))
s.stage(binascii.unhexlify({a_cert!r}), binascii.unhexlify({a_key!r}))
s.commit()
s = board.store({{"store": {cfg!r}}})
print(binascii.hexlify(s.certificate()).decode() == {a_cert!r})
"""


def _der_pair(ca, thing):
    key = certs.generate_key("ec")
    cert = ca.issue_device(thing, key.public_key())
    return certs.cert_to_der(cert), certs.key_to_der(key)


def _spki(public_key):
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _identity(cert_der, key_der, ids):
    """Name of the identity the pair is; fails on a mixed or unknown pair."""
    cert = x509.load_der_x509_certificate(cert_der)
    key = serialization.load_der_private_key(key_der, None)
    assert _spki(cert.public_key()) == _spki(key.public_key()), "mixed pair: key does not match"
    names = [name for name, pair in ids.items() if pair == (cert_der, key_der)]
    assert names, "the store reads a pair that is none of A, B, C"
    return names[0]


def _steps(ids):
    b, c = ids["B"], ids["C"]
    return [
        f"s.stage(binascii.unhexlify({b[0].hex()!r}), binascii.unhexlify({b[1].hex()!r}))",
        "s.commit()",
        f"s.stage(binascii.unhexlify({c[0].hex()!r}), binascii.unhexlify({c[1].hex()!r}))",
        "s.commit()",
        "s.rollback()",
    ]


def run_step(conn, board, code, cuts_before, timeout_s=30):
    """Run code without waiting on the serial line: its output (str) once it printed OK, None
    when the armed power cut struck. Raises with the log tail on an error or a hang."""
    mark = board.log_size()
    conn.start_exec(code)

    def ended():  # "cut", "ok", "error" or None while the step still runs
        if board.power_cuts() > cuts_before:
            return "cut"
        text = board.log_since(mark)
        return "ok" if OK in text else "error" if "Traceback" in text else None

    try:  # polled often: the board reboots at once after a cut
        how = wait_until(ended, timeout_s, "the step ended", interval_s=0.005)
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{board.log_since(mark)[-2000:]}") from None
    if how == "cut":
        return None
    if how == "error":
        raise AssertionError(f"step failed on the board:\n{board.log_since(mark)[-2000:]}")
    out, err = conn.finish(timeout_s=10)  # the rest of the raw-REPL reply
    if err:
        raise AssertionError(f"step failed on the board:\n{err[-2000:]}")
    return out


def reopen(conn, board, cuts_before, mark):
    """A new connection after the steps: at once, or after a power cut once the board has booted
    again (the log from `mark` on)."""
    if board.power_cuts() > cuts_before:
        conn.abandon()  # not close(): its Ctrl-B would reach the rebooted board
        board.wait_for_log(REBOOTED, timeout_s=20, since=mark)
    else:
        conn.close()
    return Board(board.port).open()


class Run:
    """One store kind on its own emulated board, restarted from `snapshot` for every point."""

    def __init__(self, kind, snapshot, work, ids):
        self.kind, self.snapshot, self.work, self.ids = kind, snapshot, work, ids
        self.cfg = KINDS[kind]
        self.steps = [STEP.format(cfg=self.cfg, op=op) for op in _steps(ids)]

    def _fresh_board(self):
        self.work.mkdir(parents=True, exist_ok=True)
        for name in STATE_FILES:
            shutil.copyfile(self.snapshot / name, self.work / name)
        board = EmulatedBoard(self.work)
        board.start()
        return board

    def once(self, cut_at):
        """Run the steps with the power cut armed at write `cut_at` (0: never). Returns
        (identity read after the reboot, its describe(), [write count at each step's end])."""
        board = self._fresh_board()
        conn = None
        try:
            conn = Board(board.port).open()
            cuts = board.power_cuts()
            board.arm_power_cut(cut_at)
            ends, mark = [], board.log_size()
            for code in self.steps:
                if run_step(conn, board, code, cuts) is None:
                    break
                ends.append(board.write_count())
            conn = reopen(conn, board, cuts, mark)
            out = conn.exec(
                READ.format(
                    cfg=self.cfg, a_cert=self.ids["A"][0].hex(), a_key=self.ids["A"][1].hex()
                )
            ).splitlines()
            cert_hex, key_hex, desc, rotated = out[:4]
            assert rotated == "True", f"{self.kind}: a new rotation after the cut failed"
            who = _identity(bytes.fromhex(cert_hex), bytes.fromhex(key_hex), self.ids)
            return who, json.loads(desc), ends
        except Exception as exc:
            raise AssertionError(
                f"{self.kind}, cut at write {cut_at}: {exc}\n--- serial.log "
                f"tail ---\n{board.log_text()[-1500:]}"
            ) from exc
        finally:
            if conn is not None:
                conn.close()  # a port left open would make the next board's port "in use"
            board.stop()


def _allowed(n, ends):
    """Identities a cut right after write n may leave: stage() never changes the active one,
    each commit() (and the rollback) flips somewhere inside its own writes, and not back."""
    s1, c1, s2, c2, r = ends
    if n <= s1:
        return {"A"}
    if n < c1:
        return {"A", "B"}
    if n <= s2:
        return {"B"}
    if n < c2:
        return {"B", "C"}
    if n == c2:
        return {"C"}
    return {"C", "B"} if n < r else {"B"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    require("micropython")
    require("mpremote")
    tmp = tmp_path_factory.mktemp("powercut")
    ca = LocalCa.init(tmp / "ca", key_type="ec")
    ids = {name: _der_pair(ca, f"dev-{name}") for name in "ABC"}
    snapshot = tmp / "snapshot"
    snapshot.mkdir()
    (snapshot / "board.json").write_text(json.dumps(emulator_config.table_settings(TABLE)))
    with EmulatedBoard(snapshot) as board:
        with Board(board.port) as conn:
            firmware.install(conn)
            code = PROVISION.format(
                kinds=list(KINDS.values()), cert=ids["A"][0].hex(), key=ids["A"][1].hex()
            )
            assert conn.exec(code, timeout_s=30).strip() == "provisioned"
    for name in STATE_FILES:
        assert (snapshot / name).exists(), name
    return tmp, snapshot, ids


def _matrix(kind, tmp, snapshot, ids, log):
    run = Run(kind, snapshot, tmp / kind, ids)
    who, desc, ends = run.once(0)
    assert who == "B" and len(ends) == 5, (who, ends)
    assert desc["staged"] is False and "recovered" not in desc and desc["seq"] >= 3, desc
    total = ends[-1]
    assert ends[0] > 0 and all(a < b for a, b in zip(ends, ends[1:], strict=False)), ends
    seen = []
    for n in range(1, total + 1):
        who, desc, _ = run.once(n)
        assert who in _allowed(n, ends), f"{kind}: cut after write {n} of {ends}: read {who}"
        assert "error" not in desc, desc
        seen.append(who)
    log(f"{kind}: {total} writes, step ends {ends}, identity after each cut: {''.join(seen)}")
    return kind, total, seen


def test_power_cut_at_every_write_keeps_a_whole_identity(setup):
    tmp, snapshot, ids = setup
    lines, lock = [], threading.Lock()

    def log(line):
        with lock:
            lines.append(line)

    started = time.monotonic()
    with ThreadPoolExecutor(len(KINDS)) as pool:
        futures = [pool.submit(_matrix, k, tmp, snapshot, ids, log) for k in KINDS]
    errors = [f.exception() for f in futures if f.exception()]
    assert not errors, "\n\n".join(str(e) for e in errors)
    results = [f.result() for f in futures]
    points = sum(total for _, total, _ in results)
    print("\n".join(lines), f"\n{points} power-cut points in {time.monotonic() - started:.0f} s")
    assert points >= 50, f"only {points} cut points: the sequence writes too little"
    for kind, _, seen in results:
        # Every flip must be observable: cuts leave A, then B, then C, then B again.
        assert seen[0] == "A" and "B" in seen and "C" in seen and seen[-1] == "B", (kind, seen)


WRITE = """
with open('f.txt', 'w') as f:
    f.write('x' * 300)
print('STEP' + '-OK')
"""


def test_power_cut_api_and_settings(tmp_path):
    """arm_power_cut() while running, write_count(), power_cuts(), board.json
    power_cut_after_writes at start, and the errors for bad values."""
    require("micropython")
    require("mpremote")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "board.json").write_text('{"power_cut_after_writes": -1}')
    with pytest.raises(UpcertError, match="power_cut_after_writes -1 must be a whole number"):
        EmulatedBoard(bad).start(timeout_s=10)
    board = EmulatedBoard(tmp_path / "b")
    with pytest.raises(UpcertError, match="not running: call start"):
        board.arm_power_cut(3)
    with board:
        with Board(board.port) as conn:
            board.arm_power_cut(0)
            assert run_step(conn, board, WRITE, 0) is not None and board.write_count() > 0
            assert board.power_cuts() == 0
            board.arm_power_cut(1)
            mark = board.log_size()
            assert run_step(conn, board, WRITE, 0) is None, "the first write must cut the power"
            assert board.power_cuts() == 1 and board.write_count() == 1
            conn.abandon()
        board.wait_for_log(REBOOTED, timeout_s=20, since=mark)
        with Board(board.port) as conn:  # booted again, disarmed: writes go on
            assert run_step(conn, board, WRITE, 1) is not None and board.power_cuts() == 1
    cfg = json.loads((board.state_dir / "board.json").read_text())
    (board.state_dir / "board.json").write_text(json.dumps(dict(cfg, power_cut_after_writes=2)))
    with board, Board(board.port) as conn:  # armed from the start by board.json
        assert run_step(conn, board, WRITE, 0) is None
        assert (board.power_cuts(), board.write_count()) == (1, 2)
        conn.abandon()


def test_partition_csv_settings(tmp_path):
    settings = emulator_config.table_settings(TABLE)
    labels = [p["label"] for p in settings["partitions"]]
    assert labels == ["nvs", "phy_init", "factory", "vfs", "upcert"]
    assert (settings["flash_size"], settings["nvs_size"]) == (0x1F0000, 0x6000)
    cfg = dict(emulator_config.DEFAULTS, **settings)
    upcert = emulator_config.resolve_partitions(cfg)[-1]
    assert (upcert["type"], upcert["subtype"], upcert["offset"], upcert["size"]) == (
        1,
        6,
        0x3F0000,
        0x4000,
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("nvs, data, nvs, 0x9000, lots\n")
    with pytest.raises(UpcertError, match=r"bad.csv:1: 'lots' is not a number"):
        emulator_config.read_partition_csv(bad)
