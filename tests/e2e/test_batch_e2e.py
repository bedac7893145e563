"""`upcert batch` on emulated boards: four boards at once (fs, nvs, partition) and one image
folder, recorded in an SQLite inventory and an audit log; a rerun skips what is done; half-done
boards are finished (the board holds the recorded certificate) or rolled back (it does not:
the certificate set INACTIVE, a new one made); the fleet report reads the result; and no
private key byte appears in any output, log, inventory or manifest."""

import base64
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.tools import require

TABLE = Path(__file__).resolve().parents[2] / "boards" / "esp32_generic" / "partitions.csv"


def _key_of(state, store):
    """The private key DER a board (or image folder) holds, read from its flash files."""
    from littlefs import LittleFS
    from upcert.factory import nvs

    if store == "nvs":
        return nvs.read((state / "nvs.bin").read_bytes())["upcert"]["key"]
    if store == "partition":
        data = (state / "part-upcert.bin").read_bytes()
        lc, lk = int.from_bytes(data[12:14], "little"), int.from_bytes(data[14:16], "little")
        return data[64 + lc:64 + lc + lk]
    img = (state / "flash.img") if (state / "flash.img").exists() else state / "vfs.bin"
    data = img.read_bytes()
    fs = LittleFS(block_size=4096, block_count=len(data) // 4096, mount=False)
    fs.context.buffer = bytearray(data)
    fs.mount()
    with fs.open("/upcert.d/key.der", "rb") as f:
        return f.read()


def _forms(key_der):
    """Ways a key could leak: raw DER, hex, base64 (PEM body lines), the private scalar."""
    from cryptography.hazmat.primitives.serialization import load_der_private_key

    scalar = load_der_private_key(key_der, None).private_numbers().private_value.to_bytes(32, "big")
    b64 = base64.b64encode(key_der).decode()
    return [key_der, key_der.hex().encode(), b64[:40].encode(), scalar, scalar.hex().encode()]


def test_batch_of_four_boards_resume_and_no_key_leaks(tmp_path, cloud, ca):
    require("micropython")
    require("mpremote")
    from upcert.cloud.registry import Registry
    from upcert.emu import config as emu_config
    from upcert.emu.board import EmulatedBoard
    from upcert.factory.inventory import open_inventory

    stores = ["fs", "nvs", "partition", "fs"]
    boards = []
    for i, store in enumerate(stores):
        state = tmp_path / f"b{i}"
        if store == "partition":
            emu_config.use_table(state, TABLE)
        b = EmulatedBoard(state)
        b.start()
        boards.append(b)
    imgs = tmp_path / "imgs-5"
    rows = [f"{b.port},bt-{i},{s},line=a;batch=7" for i, (b, s) in enumerate(zip(boards, stores, strict=True))]
    rows.append(f"{imgs},bt-img,nvs,")
    manifest = tmp_path / "batch.csv"
    manifest.write_text("target,thing,store,attributes\n" + "\n".join(rows) + "\n")
    inv_path, audit = tmp_path / "inv.sqlite", tmp_path / "audit.jsonl"
    env = dict(os.environ, UPCERT_HOME=str(tmp_path / "home"))
    cmd = [sys.executable, "-m", "upcert", "batch", "--manifest", str(manifest), "--endpoint",
           f"localhost:{cloud.port}", "--wifi-ssid", "lab", "--ca-dir", str(ca.directory),
           "--cloud-dir", str(cloud.state_dir), "--inventory", str(inv_path), "--audit",
           str(audit), "--station", "st-1", "--jobs", "4"]
    outputs = []

    def batch(*extra):
        p = subprocess.run(cmd + list(extra), capture_output=True, text=True, env=env,
                           timeout=300)
        outputs.append(p.stdout + p.stderr)
        return p

    try:
        p = batch("--json")
        assert p.returncode == 0, p.stdout + p.stderr
        res = {r["thing"]: r for r in json.loads(p.stdout)}
        assert {r["result"] for r in res.values()} == {"done"}, res
        inv = open_inventory(inv_path)
        recs = {r["thing"]: r for r in inv.rows()}
        assert len(recs) == 5 and all(r["state"] == "done" for r in recs.values())
        chips = [recs[f"bt-{i}"]["chip_id"] for i in range(4)]
        assert len(set(chips)) == 4 and all(len(c) == 12 for c in chips)  # the emulated MAC
        assert recs["bt-0"]["firmware"].startswith("MicroPython-1.") and recs["bt-img"][
            "firmware"] == "image"
        reg = Registry(cloud.registry_path)
        for t, r in recs.items():
            assert reg.get(r["cert_id"])["status"] == "ACTIVE", t
            assert r["cert_id"] == res[t]["cert_id"]
        assert reg.get_thing("bt-0")["attributes"] == {"line": "a", "batch": "7"}
        for i, b in enumerate(boards):  # each board connects with what the batch wrote
            line = b.wait_for_line("upcert: connected", timeout_s=90)
            assert recs[f"bt-{i}"]["cert_id"][:16] in line
        assert json.loads((imgs / "manifest.json").read_text())["cert_id"] == recs["bt-img"][
            "cert_id"]

        # A rerun redoes nothing.
        p = batch("--json")
        assert p.returncode == 0, p.stderr
        assert {r["result"] for r in json.loads(p.stdout)} == {"skipped"}

        # Half-done boards: bt-1 holds its recorded certificate (finished); bt-3 was
        # interrupted after a certificate was issued and before it was written (rolled back).
        from upcert.board import provision as prov

        stray, _, _ = prov.local_credentials(ca.directory, "bt-3")
        stray_id = prov.certs.cert_id(stray)
        reg.register(stray, "bt-3")
        con = sqlite3.connect(inv_path)
        con.execute("UPDATE boards SET state='issued' WHERE thing='bt-1'")
        con.execute("UPDATE boards SET state='issued', cert_id=?, fingerprint='x' "
                    "WHERE thing='bt-3'", (stray_id,))
        con.commit()
        con.close()
        p = batch("--json")
        assert p.returncode == 0, p.stdout + p.stderr
        res2 = {r["thing"]: r for r in json.loads(p.stdout)}
        assert res2["bt-1"]["result"] == "finished"
        assert res2["bt-1"]["cert_id"] == recs["bt-1"]["cert_id"]
        assert res2["bt-3"]["result"] == "done" and res2["bt-3"]["cert_id"] not in (
            stray_id, recs["bt-3"]["cert_id"])
        assert reg.get(stray_id)["status"] == "INACTIVE"
        assert {res2[t]["result"] for t in ("bt-0", "bt-2", "bt-img")} == {"skipped"}
        actions = [json.loads(x) for x in audit.read_text().splitlines()]
        assert {"issued", "written", "done", "skipped", "finished", "rolled-back"} <= {
            a["action"] for a in actions}
        assert all(a["station"] == "st-1" for a in actions)

        # The fleet report sees five boards, none rotated, bt-3's first certificate on no board.
        p = subprocess.run([sys.executable, "-m", "upcert", "fleet", "report", "--inventory",
                            str(inv_path), "--cloud-dir", str(cloud.state_dir), "--json",
                            "--png", str(tmp_path / "fleet.png")], capture_output=True,
                           text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        rep = json.loads(p.stdout)
        outputs.append(p.stdout + p.stderr)
        assert len(rep["boards"]) == 5 and len(rep["never_rotated"]) == 5
        assert recs["bt-3"]["cert_id"] in [c["cert_id"] for c in rep["on_no_board"]]
        assert (tmp_path / "fleet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        for b in boards:
            b.stop()

    # No key byte in any output, log, inventory or manifest.
    keys = [_key_of(b.state_dir, s) for b, s in zip(boards, stores, strict=True)]
    keys.append(_key_of(imgs, "nvs"))  # the image folder: nvs.bin
    haystacks = {"outputs": "\n".join(outputs).encode(), "audit": audit.read_bytes(),
                 "manifest": (imgs / "manifest.json").read_bytes()}
    for f in tmp_path.glob("inv.sqlite*"):
        haystacks[f.name] = f.read_bytes()
    for b in boards:
        for name in ("serial.log", "host.log"):
            haystacks[f"{b.state_dir.name}/{name}"] = (b.state_dir / name).read_bytes()
    for key in keys:
        for form in _forms(key):
            for name, data in haystacks.items():
                assert form not in data, f"key material in {name}"
