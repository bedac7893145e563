"""Per-board flash images (upcert image build) booted by emulated boards: the board's partition
table comes from partition-table.bin, its littlefs root from vfs.bin, its NVS from nvs.bin (made
by Espressif's generator) and the `upcert` partition from upcert.bin, nothing else; the agent
then connects with the credentials inside the images and its telemetry reaches the stand-in."""

import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import telemetry_config
from tests.tools import require


def _build(tmp_path, cloud, ca, thing, store):
    from upcert.board import provision as prov
    from upcert.factory import image

    cfg = telemetry_config(thing, cloud, store)
    cert, key, roots = prov.local_credentials(ca.directory, thing)
    out = tmp_path / f"images-{store}"
    return out, image.build(out, cfg, cert, key, roots)


@pytest.mark.parametrize("store", ["fs", "nvs", "partition"])
def test_a_board_booted_from_images_connects(tmp_path, cloud, ca, thing, store):
    require("micropython")
    from upcert.board.provision import status
    from upcert.cloud.standin import Subscription
    from upcert.emu.board import EmulatedBoard
    from upcert.emu.config import use_images

    out, manifest = _build(tmp_path, cloud, ca, thing, store)
    names = {f["file"] for f in manifest["files"]}
    want = {"fs": set(), "nvs": {"nvs.bin"}, "partition": {"upcert.bin"}}[store]
    assert names == {"partition-table.bin", "vfs.bin"} | want
    state = tmp_path / "board"
    cfg = use_images(state, out)
    labels = [p["label"] for p in cfg["partitions"]]
    assert labels == ["nvs", "phy_init", "factory", "vfs", "upcert"]  # from the binary table
    assert (state / "flash.img").read_bytes() == (out / "vfs.bin").read_bytes()
    assert (state / "nvs.bin").exists() == (store == "nvs")
    sub = Subscription(cloud, f"things/{thing}/#")
    board = EmulatedBoard(state)
    try:
        board.start()
        line = board.wait_for_line("upcert: connected", timeout_s=60)
        assert manifest["cert_id"][:16] in line
        msg = sub.wait_for(lambda m: m.topic == f"things/{thing}/telemetry", timeout_s=30)
        assert json.loads(msg.payload)["cert_id"] == manifest["cert_id"]
        assert "Performing initial setup" not in board.log_text()  # vfs.bin was mounted as is
        st = status(board.port)
        assert st["store"]["kind"] == store and st["cert_id"] == manifest["cert_id"]
    finally:
        sub.close()
        board.stop()


def test_cli_image_build_show_and_boot(tmp_path, cloud, ca, thing):
    require("micropython")
    import os

    env = dict(os.environ, UPCERT_HOME=str(tmp_path / "home"))
    out = tmp_path / "imgs"
    run = [sys.executable, "-m", "upcert"]
    p = subprocess.run(run + ["image", "build", "--thing", thing, "--endpoint",
                              f"localhost:{cloud.port}", "--store", "nvs", "--wifi-ssid", "lab",
                              "--ca-dir", str(ca.directory), "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "0x009000" in p.stdout and "nvs.bin" in p.stdout and "private key is inside" in p.stdout
    assert oct(out.stat().st_mode & 0o777) == "0o700"
    assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in out.iterdir())
    shown = subprocess.run(run + ["image", "show", "--images", str(out)], capture_output=True,
                           text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    keys = view["nvs_keys"]["upcert"]
    assert set(keys) == {"cert", "key"} and keys["key"].startswith("bytes (")  # sizes, no bytes
    assert view["nvs_pages"][0]["state"] == "active"
    boot = subprocess.run(run + ["image", "boot", "--images", str(out), "--name", "b1"],
                          capture_output=True, text=True, env=env, timeout=60)
    try:
        assert boot.returncode == 0 and boot.stdout.startswith("/dev/pts/"), boot.stderr
    finally:
        subprocess.run(run + ["board", "stop", "--name", "b1"], env=env, timeout=60)
    bad = subprocess.run(run + ["image", "boot", "--images", str(tmp_path), "--name", "b2"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "holds no manifest.json" in bad.stderr
    (out / "nvs.bin").write_bytes(b"\xff" * 24576)
    bad = subprocess.run(run + ["image", "boot", "--images", str(out), "--name", "b2"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "differs from its manifest" in bad.stderr
