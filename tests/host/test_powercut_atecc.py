"""Power cut after every flash write of a rotation with the atecc608 store (key in an ATECC608).

A board with an emulated blank chip is provisioned (`provision_chip`, lock=True) and its state
folder, chip included, is the snapshot. The rotation: a new key in a spare key slot (GenKey) and a
CSR signed by the chip, a certificate from the local CA, stage, commit; each a separate exec. An
uncut run counts the flash writes W and where each step ends; then for every n in 1..W the board
restarts from the snapshot, loses power right after its nth flash write, reboots, and the store
must read a certificate whose public key is the chip's key in the store's active key slot (read
with the driver, `public_key(slot)`) and that signs for it: the old identity or the new one the
cut point allows, never a mix. A new rotation (`rotate_chip`) must then succeed. The chip's
EEPROM (GenKey) is <state>/atecc608.json: not a flash write, and it survives a power cut.
"""

import hashlib
import json
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from upcert.board.chip import (
    CODE,
    check_csr,
    make_chip_config,
    provision_chip,
    rotate_chip,
    verify_digest,
)
from upcert.board.provision import CONFIG_PATH
from upcert.board.transport import Board
from upcert.emu.board import EmulatedBoard
from upcert.pki import certs
from upcert.pki.ca import LocalCa

from tests.host.test_powercut import reopen, run_step
from tests.tools import require

THING = "dev-chip"
KEEP = re.compile(r"^(flash\.img|nvs\.bin|board\.json|atecc608\.json|part-.+\.bin)$")
OK = "STEP" + "-OK "  # never in the code sent, only in what the board prints
WORKERS = 4  # boards at once; each waits on its pty and the chip's I2C bridge most of the time

# Every snippet starts and ends by dropping the device package and its own globals, as
# provision_chip's steps do: the raw REPL keeps them, and the heap is an ESP32's.
PRELUDE = """
import sys, gc
_G = set(globals()) | {'_G', '_m', '_k'}
for _m in [m for m in sys.modules if m.startswith('upcert') or m == 'board']:
    sys.modules.pop(_m)
gc.collect()
import json, binascii, hashlib, board
A = json.loads(%r)
h = lambda b: binascii.hexlify(b).decode()
u = binascii.unhexlify
def store():
    from upcert import config
    return board.store(config.load(A['config_path']))
"""
EPILOGUE = """
print('STEP' + '-OK ' + json.dumps(out))
for _m in [m for m in sys.modules if m.startswith('upcert') or m == 'board']:
    sys.modules.pop(_m)
for _k in [k for k in globals() if k not in _G]:
    globals().pop(_k)
gc.collect()
"""
COMMIT = "s = store()\ns.commit()\nout = {'slot': store().key_slot()}"
# After the reboot: the active identity, the chip's public key of its key slot read with a
# driver of its own (board.atecc: upcert.atecc.ATECC), and a signature through the store.
READ = """
from upcert import config
cfg = config.load(A['config_path'])
s = board.store(cfg)
slot = s.key_slot()
r, t = s.signer().sign_digest(u(A['digest']))
out = {'cert': h(s.certificate()), 'slot': slot, 'r': '%x' % r, 's': '%x' % t,
       'pub': h(board.atecc(cfg['store']).public_key(slot)), 'describe': s.describe()}
"""


def _code(body, **args):
    return PRELUDE % json.dumps(dict(args, config_path=CONFIG_PATH)) + body + EPILOGUE


def _point(cert):
    return cert.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _issue(ca, req, size):
    """The CA's certificate for the CSR, re-issued until it is `size` bytes of DER (None: any):
    serial number and signature vary in length, and the same sizes give the same flash writes."""
    for _ in range(500):
        der = certs.cert_to_der(ca.issue_device(THING, req.public_key()))
        if size is None or len(der) == size:
            return der
    raise AssertionError(f"the local CA never issued a {size}-byte certificate in 500 tries")


def _step(conn, board, code, cuts_before):
    """Run code (test_powercut.run_step): its `out` (a dict) when it printed OK, None when the
    armed power cut struck."""
    out = run_step(conn, board, code, cuts_before)
    if out is None:
        return None
    line = next(x for x in out.splitlines() if x.startswith(OK))
    return json.loads(line[len(OK) :])


class Run:
    """The rotation on a board restarted from `snapshot` in a folder of its own per cut point."""

    def __init__(self, tmp, snapshot, ca, old):
        self.tmp, self.snapshot, self.ca, self.old = tmp, snapshot, ca, old
        self.size = None  # certificate size of the uncut run, kept in every cut run

    def _fresh_board(self, work):
        work.mkdir(parents=True)
        for path in self.snapshot.iterdir():
            if KEEP.match(path.name):
                shutil.copy2(path, work / path.name)
        board = EmulatedBoard(work)
        board.start()
        return board

    def _rotate(self, conn, board, cuts, ends):
        # new key + CSR, certificate, stage, commit; ends gets the write count after each step.
        k = _step(conn, board, _code(CODE["new_key"]), cuts)
        if k is None:
            return None
        ends.append(board.write_count())
        assert (k["old"], k["slot"], k["old_pub"]) == (0, 2, self.old["pub"][1:].hex()), k
        req = check_csr(bytes.fromhex(k["csr"]), bytes.fromhex(k["pub"]))
        cert = _issue(self.ca, req, self.size)
        self.size = self.size or len(cert)
        new = {"cert": cert, "slot": k["slot"], "pub": b"\x04" + bytes.fromhex(k["pub"])}
        stage = _code(CODE["stage"], cert=cert.hex(), ref=k["ref"], old=k["old"], commit=False)
        for code in (stage, _code(COMMIT)):
            out = _step(conn, board, code, cuts)
            if out is None:
                break
            ends.append(board.write_count())
        return new

    def once(self, cut_at):
        """The rotation with the power cut armed at flash write `cut_at` (0: never), then a
        reboot, the read-back and a new rotation. Returns ("old"|"new", [writes at step ends],
        describe() after the cut, the new rotation's RotateResult)."""
        board = self._fresh_board(self.tmp / f"cut-{cut_at}")
        conn, ends = None, []
        try:
            conn = Board(board.port).open()
            cuts = board.power_cuts()
            board.arm_power_cut(cut_at)
            mark = board.log_size()
            new = self._rotate(conn, board, cuts, ends)
            conn = reopen(conn, board, cuts, mark)
            digest = hashlib.sha256(os.urandom(32)).digest()
            got = _step(conn, board, _code(READ, digest=digest.hex()), board.power_cuts())
            conn.close()
            who = self._identity(got, digest, new)
            rot = rotate_chip(board.port, self.ca.directory, reset=False, log=lambda m: None)
            assert rot.old_slot == got["slot"] and rot.new_slot != got["slot"], rot
            return who, ends, got["describe"], rot
        except Exception as exc:
            raise AssertionError(
                f"cut at write {cut_at}: {exc}\n--- serial.log tail ---\n{board.log_text()[-1500:]}"
            ) from exc
        finally:
            if conn is not None:
                conn.close()  # a port left open would make the next board's port "in use"
            board.stop()

    def _identity(self, got, digest, new):
        """Which identity the store reads, "old" or "new": its certificate must be for the
        chip's key in its active key slot, and a signature through the store must verify."""
        cert_der = bytes.fromhex(got["cert"])
        point = _point(x509.load_der_x509_certificate(cert_der))
        chip = b"\x04" + bytes.fromhex(got["pub"])
        assert point == chip, f"mixed: the certificate is not for the key in slot {got['slot']}"
        assert verify_digest(point, digest, int(got["r"], 16), int(got["s"], 16)), (
            "a signature through the store does not verify with its certificate"
        )
        read = {"cert": cert_der, "slot": got["slot"], "pub": chip}
        for name, ident in (("old", self.old), ("new", new)):
            if read == ident:
                return name
        raise AssertionError(f"the store reads an identity that is neither old nor new: {got}")


def _allowed(n, ends):
    """Identities a cut right after flash write n may leave: new key and stage never change the
    active one; commit flips somewhere inside its own writes, and not back."""
    _, staged, committed = ends
    if n <= staged:
        return {"old"}
    return {"old", "new"} if n < committed else {"new"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    require("micropython")
    require("mpremote")
    tmp = tmp_path_factory.mktemp("powercut_atecc")
    ca = LocalCa.init(tmp / "ca", key_type="ec")
    snapshot = tmp / "snapshot"
    cfg = make_chip_config(THING, "localhost:8883")
    with EmulatedBoard(snapshot, atecc608="blank") as board:
        res = provision_chip(
            board.port, cfg, ca.directory, lock=True, reset=False, log=lambda m: None
        )
        with Board(board.port) as conn:  # each reboot should reach the REPL at once
            conn.exec("import os\nos.remove('/main.py')")
    assert res.config_locked and res.data_locked and res.slot == 0, res
    old = {"cert": certs.cert_to_der(res.certificate), "slot": 0, "pub": _point(res.certificate)}
    kept = sorted(p.name for p in snapshot.iterdir() if KEEP.match(p.name))
    assert {"flash.img", "board.json", "atecc608.json"} <= set(kept), kept
    return tmp, snapshot, ca, old


def test_power_cut_at_every_write_of_a_chip_rotation(setup):
    tmp, snapshot, ca, old = setup
    started = time.monotonic()
    run = Run(tmp, snapshot, ca, old)
    who, ends, desc, rot = run.once(0)
    assert who == "new" and len(ends) == 3 and desc["key_slot"] == 2, (who, ends, desc)
    assert desc["idle_key_slot"] == 0 and desc["staged"] is False, desc
    assert (rot.old_slot, rot.new_slot) == (2, 3), rot
    total = ends[-1]
    assert ends[0] < ends[1] < ends[2], f"stage and commit must each write the flash: {ends}"
    lock = threading.Lock()
    seen = {}

    def one(n):
        who_n, ends_n, desc_n, rot_n = run.once(n)
        assert ends_n == ends[: len(ends_n)], f"cut at {n}: writes {ends_n}, uncut {ends}"
        assert who_n in _allowed(n, ends), f"cut after write {n} of {ends}: read {who_n}"
        assert "error" not in desc_n and "recovered" not in desc_n, desc_n
        with lock:
            seen[n] = f"{who_n}:{rot_n.old_slot}->{rot_n.new_slot}"
        shutil.rmtree(tmp / f"cut-{n}", ignore_errors=True)  # 4 MB of images each

    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(one, n) for n in range(1, total + 1)]
    errors = [str(f.exception()) for f in futures if f.exception()]
    assert not errors, "\n\n".join(errors)
    order = [seen[n].split(":")[0] for n in range(1, total + 1)]
    print(
        f"\natecc608: {total} flash writes, step ends {ends} (new key, stage, commit); "
        f"after each cut (identity:new rotation's slots): {[seen[n] for n in sorted(seen)]}; "
        f"{total + 1} runs in {time.monotonic() - started:.0f} s"
    )
    # Both identities are observable, and the flip happens once: old ... old new ... new.
    assert order[0] == "old" and order[-1] == "new", order
    assert order == sorted(order, key=lambda w: w == "new"), order
