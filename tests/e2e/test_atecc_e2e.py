"""Store atecc608 end to end: emulated boards with an emulated ATECC608 (board.json "atecc608"),
provisioned through mpremote; every signature the chip makes is checked here with cryptography."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from tests.tools import wait_until

ENDPOINT = "localhost:8883"  # where no test here needs a broker


@pytest.fixture
def chip_board(board_factory):
    """make(layout) -> a started EmulatedBoard with an emulated ATECC608 on its I2C bus
    (board.json "atecc608": blank at 0x60, Trust&Go-style at 0x35)."""
    return lambda layout="blank", **kw: board_factory(atecc608=layout, **kw)


def _cfg(thing, address=0x60, cert="fs", endpoint=ENDPOINT):
    from upcert.board.chip import make_chip_config

    return make_chip_config(thing, endpoint, address=address, cert=cert,
                            wifi=("upcert-lab", "test-password"))


def _on_board(board, step, **args):
    from upcert.board.chip import run
    from upcert.board.transport import Board

    with Board(board.port) as b:
        return run(b, step, **args)


def _chip(board, address, code):
    """Run `code` on the board with `c` = the driver; returns what it sets as `out`."""
    from upcert.board.chip import run_code
    from upcert.board.transport import Board

    with Board(board.port) as b:
        return run_code(b, f"c = chip()\n{code}", "test code", store={"address": address})


def _public_key(board, address, slot):
    out = _chip(board, address, f"out = h(c.public_key({slot}))")
    return b"\x04" + bytes.fromhex(out)


def _point(cert):
    return cert.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)


def _store_signs(board, point):
    # A signature through the board's store, of a digest chosen here, verified here.
    digest = hashlib.sha256(os.urandom(32)).digest()
    out = _on_board(board, "verify", config_path="/upcert.d/config.json", digest=digest.hex())
    assert bytes.fromhex(out["point"]) == point
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    pub.verify(encode_dss_signature(int(out["r"], 16), int(out["s"], 16)), digest,
               ec.ECDSA(Prehashed(hashes.SHA256())))  # raises InvalidSignature
    assert out["no_key"] is True
    return out["describe"]


def _cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "upcert.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_blank_chip_without_lock_is_refused_and_nothing_written(chip_board, ca, thing):
    from upcert.board import firmware
    from upcert.board.transport import Board

    board = chip_board("blank")
    st = _cfg(thing)["store"]
    with Board(board.port) as b:
        firmware.install(b)
    before = _on_board(board, "probe", store=st)
    r = _cli("provision", "--store", "atecc608", "--port", board.port, "--thing", thing,
             "--endpoint", ENDPOINT, "--ca-dir", str(ca.directory), "--no-wifi")
    assert r.returncode == 1, r.stdout + r.stderr
    for text in ("blank", "configuration zone is not locked", "generates a key only after",
                 "permanent", "never be changed or unlocked", "Nothing was written", "--lock",
                 "atecc608.json"):
        assert text in r.stderr, r.stderr
    assert _on_board(board, "probe", store=st) == before  # config zone untouched, unlocked
    from upcert.board.chip import decode_config

    assert not decode_config(bytes.fromhex(before["config"]))["config_locked"]
    with Board(board.port) as b:
        for path in ("/upcert.d/config.json", "/upcert.d/cert.der", "/upcert.d/key.ref"):
            assert b.sha256_file(path) is None, path


def test_blank_chip_lock_provision_connect_status_and_rotation(chip_board, ca, cloud, thing):
    from upcert.board.chip import KEY_CONFIG, SLOT_CONFIG, decode_config, provision_chip
    from upcert.cloud.registry import Registry
    from upcert.cloud.standin import Subscription

    board = chip_board("blank")  # at emu/config.py's OWN_TLS_HEAPSIZE (a chip is fitted)
    assert json.loads((board.state_dir / "board.json").read_text())["heapsize"] == "200K"
    cfg = _cfg(thing, endpoint=f"localhost:{cloud.port}")
    cfg["telemetry_interval_s"] = 2
    with Subscription(cloud, f"things/{thing}/telemetry") as sub:
        res = provision_chip(board.port, cfg, ca.directory, lock=True, log=lambda m: None,
                             registry=Registry(cloud.registry_path))
        assert res.configured and res.config_locked and res.data_locked and res.slot == 0
        # After the reset the agent connects with upcert's own TLS client: the key stays in the
        # chip (CertificateVerify and the ECDHE key are the chip's), and the broker, which
        # requires a client certificate, takes it.
        line = board.wait_for_line("upcert: connected", timeout_s=90)
        assert "(upcert)" in line and "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256" in line, line
        m = json.loads(sub.wait_for(lambda m: b'"tls"' in m.payload, timeout_s=60).payload)
    assert m["tls"] == "upcert" and m["cert_id"] == res.cert_id, m
    assert "cannot start" not in board.log_text()

    cert = res.certificate
    cert.verify_directly_issued_by(ca.certificate)
    slot0 = _public_key(board, 0x60, 0)
    assert _point(cert) == slot0  # the certificate is for the key inside the chip

    info = decode_config(bytes.fromhex(_on_board(board, "probe", store=_cfg(thing)["store"])
                                       ["config"]))
    assert info["config_locked"] and info["data_locked"] and info["serial"] == res.serial
    assert [info["slots"][n]["slot_config"] for n in range(16)] == SLOT_CONFIG
    assert [info["slots"][n]["key_config"] for n in range(16)] == KEY_CONFIG
    # The private key is never readable, and GenKey where the layout forbids it is refused.
    out = _chip(board, 0x60, "from upcert.errors import AteccError\nout = []\n"
                "for f in (lambda: c.read(2, 0, 0, 0, 32), lambda: c.genkey(8)):\n"
                "    try:\n        f()\n        out.append(None)\n"
                "    except AteccError as e:\n        out.append(e.status)")
    assert out == [0x0F, 0x0F]
    d = _store_signs(board, slot0)
    assert d["key_slot"] == 0 and d["serial"] == res.serial

    st = _cli("board", "status", "--port", board.port)
    assert st.returncode == 0, st.stderr
    store = json.loads(st.stdout)["store"]
    assert store["kind"] == "atecc608" and store["serial"] == res.serial
    assert store["revision"] in ("00006002", "00006003") and store["address"] == "0x60"
    assert store["config_locked"] and store["data_locked"]
    assert store["key_slot"] == 0 and store["spare_slots"] == [2, 3, 4]
    assert json.loads(st.stdout)["cert_id"] == res.cert_id

    # Rotation to a spare slot: staged first (slot 0 intact and still active), then committed.
    from upcert.board.chip import rotate_chip

    rot = rotate_chip(board.port, ca.directory, commit=False, reset=False, log=lambda m: None)
    assert (rot.old_slot, rot.new_slot, rot.committed) == (0, 2, False)
    assert _point(rot.certificate) == _public_key(board, 0x60, 2) != slot0
    assert _public_key(board, 0x60, 0) == slot0
    d = _store_signs(board, slot0)
    assert d["key_slot"] == 0 and d["staged"] is True and d["idle_key_slot"] == 2
    _chip(board, 0x60, "from upcert import config\n"
          "board.store(config.load('/upcert.d/config.json')).commit()\nout = 1")
    d = _store_signs(board, _point(rot.certificate))
    assert d["key_slot"] == 2 and d["slot"] == "B" and d["staged"] is False
    assert d["idle_key_slot"] == 0  # slots in use: 2 active, 0 the rollback target
    assert _public_key(board, 0x60, 0) == slot0  # the rollback target stays intact

    r = _cli("chip", "rotate", "--port", board.port, "--ca-dir", str(ca.directory))
    assert r.returncode == 0, r.stderr
    assert "key slot 2 -> 3" in r.stdout, r.stdout
    st = json.loads(_cli("board", "status", "--port", board.port).stdout)
    assert st["store"]["key_slot"] == 3 and st["store"]["slot"] == "A"
    assert "PRIVATE KEY" not in r.stdout + r.stderr


def test_trust_and_go_chip_skips_configuration(chip_board, ca, thing):
    from upcert.board.transport import Board

    board = chip_board("tng")
    r = _cli("provision", "--store", "atecc608", "--chip-address", "0x35", "--port", board.port,
             "--thing", thing, "--endpoint", ENDPOINT, "--ca-dir", str(ca.directory),
             "--wifi-ssid", "upcert-lab", "--no-reset")
    assert r.returncode == 0, r.stderr
    assert "layout" not in r.stderr and "locking" not in r.stderr, r.stderr  # no configuration
    assert "reading the key of slot 0" in r.stderr, r.stderr
    assert "key slot 0" in r.stdout and "chip 0123" in r.stdout, r.stdout
    with Board(board.port) as b:
        cert = x509.load_der_x509_certificate(b.read_file("/upcert.d/cert.der"))
    slot0 = _public_key(board, 0x35, 0)
    assert _point(cert) == slot0
    cert.verify_directly_issued_by(ca.certificate)
    d = _store_signs(board, slot0)
    assert d["address"] == "0x35" and d["key_slot"] == 0 and d["serial"].endswith("ee")


def test_config_locked_chip_is_provisioned_without_lock(chip_board, ca, thing):
    # A chip whose config zone is locked but not its data zone (a run stopped half-way): the key
    # is made without --lock, and the data zone stays unlocked with a warning.
    from upcert.board import firmware
    from upcert.board.chip import KEY_CONFIG, SLOT_CONFIG, layout_bytes, provision_chip
    from upcert.board.transport import Board

    board = chip_board("blank")
    st = _cfg(thing)["store"]
    with Board(board.port) as b:
        firmware.install(b)
    _on_board(board, "configure", store=st, slot_config=layout_bytes(SLOT_CONFIG).hex(),
              key_config=layout_bytes(KEY_CONFIG).hex())
    _on_board(board, "lock_config", store=st)
    res = provision_chip(board.port, _cfg(thing), ca.directory, reset=False, log=lambda m: None)
    assert not res.configured and res.config_locked and not res.data_locked
    assert any("data zone stays unlocked" in w for w in res.warnings), res.warnings
    _store_signs(board, _point(res.certificate))


def test_certificate_in_data_slot_8(chip_board, ca, thing):
    import datetime

    from upcert.board.chip import ChipError, provision_chip, run_code
    from upcert.board.transport import Board

    board = chip_board("tng")
    # The local CA's certificates (RSA signature, five extensions) never fit 416 bytes: refused
    # before anything is written.
    with pytest.raises(ChipError, match="data slot 8 holds 416: use --chip-cert fs"):
        provision_chip(board.port, _cfg(thing, 0x35, cert="slot8"), ca.directory,
                       log=lambda m: None)
    res = provision_chip(board.port, _cfg(thing, 0x35), ca.directory, reset=False,
                         log=lambda m: None)
    # A small certificate for the chip's key (P-256 issuer, no extensions) fits slot 8.
    issuer = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "d1")])
    small = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(res.certificate.public_key()).serial_number(1)
             .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
             .sign(issuer, hashes.SHA256()))
    der = small.public_bytes(serialization.Encoding.DER)
    assert len(der) <= 416
    code = ("import os\nfrom upcert.store_atecc import AteccStore\n"
            "s = AteccStore(c, root='/chip8', cert='slot8')\ns.write(u(A['cert']), s.ref(0))\n"
            "s = AteccStore(c, root='/chip8', cert='slot8')\n"
            "out = {'cert': h(s.certificate()), 'files': os.listdir('/chip8'), 'slot': s.key_slot(),"
            " 'raw': h(b''.join(c.read(2, 8, b, 0, 32) for b in range(13)))}")
    with Board(board.port) as b:
        out = run_code(b, "c = chip()\n" + code, "slot 8", store={"address": 0x35},
                       cert=der.hex())
    assert bytes.fromhex(out["cert"]) == der and out["slot"] == 0
    assert bytes.fromhex(out["raw"])[: len(der)] == der  # in the chip, not on the flash
    assert out["files"] == ["key.ref"]


def test_chip_board_rotates_itself_over_fleet_provisioning(chip_board, ca, cloud, thing):
    # A rotation job: the agent makes the new key in a spare chip slot, the chip signs the CSR,
    # CreateCertificateFromCsr and RegisterThing over upcert's TLS, the trial connection with
    # the new slot's key, then the atomic flip; the old slot stays for rollback.
    from upcert.board.chip import provision_chip
    from upcert.board.provision import status
    from upcert.cloud import admin
    from upcert.cloud.registry import Registry
    from upcert.cloud.standin import Subscription

    board = chip_board("blank")
    cfg = _cfg(thing, endpoint=f"localhost:{cloud.port}")
    cfg["telemetry_interval_s"] = 2
    reg = Registry(cloud.registry_path)
    with Subscription(cloud, f"things/{thing}/telemetry") as sub:
        res = provision_chip(board.port, cfg, ca.directory, lock=True, log=lambda m: None,
                             registry=reg)
        sub.wait_for(lambda m: json.loads(m.payload)["cert_id"] == res.cert_id, timeout_s=90)
        mark = board.log_path.stat().st_size
        admin.create_rotation_job(cloud.state_dir, thing)
        done = board.wait_for_line("upcert: rotation: done", timeout_s=120, since=mark)
        new = json.loads(sub.wait_for(lambda m: json.loads(m.payload)["cert_id"] != res.cert_id,
                                      timeout_s=60).payload)
    log = board.log_path.read_bytes()[mark:].decode("utf-8", "replace")
    assert "new P-256 key" in log and "trial connection" in log, log
    assert new["tls"] == "upcert" and new["cert_id"][:16] in done, (new, done)
    assert reg.get(new["cert_id"])["status"] == "ACTIVE"
    # retired once the new identity is proven: the job's SUCCEEDED goes out after the first
    # telemetry PUBACK with it, so a moment after the telemetry seen above
    wait_until(lambda: reg.get(res.cert_id)["status"] == "INACTIVE", 30,
               "the old certificate set INACTIVE after the job succeeded")
    st = status(board.port, timeout_s=30)
    assert st["cert_id"] == new["cert_id"] and st["store"]["key_slot"] == 2, st
    assert st["store"]["idle_key_slot"] == 0  # the old key kept for rollback
