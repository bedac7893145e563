"""Everything upcert keeps under $UPCERT_HOME is its owner's alone (hardening item 2): folders
0700, files 0600. A board's flash.img and nvs.bin hold its private key and Wi-Fi password
(littlefs-python reads /upcert.d/key.der out of the image), so 0644 would hand them to every
local user. Checked after a realistic session run through the CLI with umask 022, as a user's
shell has it."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools import ROOT, require


def bad_modes(top, skip=()):
    """[(path, mode)] of folders not 0700 and files not 0600 under top (top included)."""
    bad = []
    for folder, dirs, names in os.walk(top):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skip]
        mode = stat.S_IMODE(os.lstat(here).st_mode)
        if mode != 0o700:
            bad.append((str(here), oct(mode)))
        for n in names:
            st = os.lstat(here / n)
            if stat.S_ISLNK(st.st_mode):
                continue  # a symlink has no mode of its own (and none is left after a stop)
            if stat.S_IMODE(st.st_mode) != 0o600:
                bad.append((str(here / n), oct(stat.S_IMODE(st.st_mode))))
    return bad


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """$UPCERT_HOME after: ca init, cloud up, board start (with an emulated ATECC608),
    provision (local CA, Wi-Fi), board status, certs list, board stop, cloud down."""
    require("micropython")
    require("mpremote")
    require("mosquitto")
    home = tmp_path_factory.mktemp("modes") / "home"  # made by upcert itself
    env = dict(os.environ, UPCERT_HOME=str(home), UPCERT_WIFI_PASSWORD="lab-password")

    def upcert(*args):
        out = subprocess.run([sys.executable, "-m", "upcert.cli", *args], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=240, umask=0o022)
        assert out.returncode == 0, f"upcert {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    upcert("ca", "init", "--key-type", "ec")
    port = re.search(r"mqtts://[^:]+:(\d+)", upcert("cloud", "up")).group(1)
    try:
        serial = upcert("board", "start", "--name", "b1", "--atecc608", "blank").strip()
        try:
            upcert("provision", "--port", serial, "--thing", "modes-1", "--endpoint",
                   f"localhost:{port}", "--wifi-ssid", "lab")
            upcert("board", "status", "--port", serial)
            upcert("certs", "list")
        finally:
            upcert("board", "stop", "--name", "b1")
    finally:
        upcert("cloud", "down")
    return home


def test_home_ca_and_board_state_are_private(session):
    board = session / "boards" / "b1"
    # the session really made what is at stake
    for name in ("flash.img", "nvs.bin", "rtc.bin", "board.json", "atecc608.json", "serial.log",
                 "host.log", "powercut.bin"):
        assert (board / name).is_file(), name
    assert list(board.glob("part-*.bin")) and (session / "ca" / "ca.key").is_file()
    assert bad_modes(session, skip={session / "cloud"}) == []


def test_cloud_state_is_private(session):
    assert bad_modes(session / "cloud") == []


# ---- without a board: the same rule for each writer ----------------------------------------
def test_board_state_files_made_by_the_host_are_private(tmp_path, umask022):
    from upcert.emu import config as emulator_config

    state = tmp_path / "new" / "b"
    emulator_config.load(state)
    emulator_config.reset_rtc(state, "unset")
    emulator_config.write_powercut(state, 0, 0, 0)
    assert bad_modes(tmp_path / "new") == []


def test_board_files_of_an_earlier_version_are_tightened(tmp_path, umask022):
    from upcert.emu.board import secure_state

    state = tmp_path / "old"
    state.mkdir(mode=0o700)
    names = ("flash.img", "nvs.bin", "part-upcert.bin", "rtc.bin", "board.json", "serial.log",
             "host.log", "atecc608.json", "powercut.bin")
    for n in names:
        (state / n).write_bytes(b"x")
        os.chmod(state / n, 0o644)
    secure_state(state)
    assert bad_modes(state) == []


def test_board_start_makes_and_tightens_its_folders(tmp_path, monkeypatch, umask022):
    from upcert import cli

    started = []

    class FakeBoard:  # the state folder as the CLI hands it over, no interpreter started
        def __init__(self, state_dir, **kw):
            started.append(state_dir)

        def start(self):
            return "/dev/pts/fake"

    monkeypatch.setattr("upcert.emu.board.EmulatedBoard", FakeBoard)
    home = tmp_path / "home"
    monkeypatch.setenv("UPCERT_HOME", str(home))
    assert cli.main(["board", "start", "--name", "fresh"]) == 0
    (home / "boards" / "old").mkdir(mode=0o755)  # made by an earlier version
    os.chmod(home / "boards", 0o755)
    assert cli.main(["board", "start", "--name", "old"]) == 0
    assert len(started) == 2
    assert bad_modes(home) == []


def test_emulated_board_process_runs_under_umask_077(tmp_path, umask022):
    # what the MicroPython board creates itself (flash.img, nvs.bin, part-*.bin: emu_flash.py
    # cannot chmod) gets its mode from the umask of the process that spawns it
    require("micropython")
    from upcert.emu.board import EmulatedBoard

    with EmulatedBoard(tmp_path / "deep" / "b") as board:
        assert board.port
    made = {p.name for p in (tmp_path / "deep" / "b").iterdir()}
    assert {"flash.img", "nvs.bin", "host.log", "serial.log"} <= made, made
    assert bad_modes(tmp_path / "deep") == []


def test_local_ca_files_are_private(tmp_path, umask022):
    from upcert.pki.ca import LocalCa

    LocalCa.init(tmp_path / "home" / "ca")
    assert sorted(p.name for p in (tmp_path / "home" / "ca").iterdir()) == [
        "admin.key", "admin.pem", "ca.key", "ca.pem", "server.key", "server.pem"]
    assert bad_modes(tmp_path / "home") == []
