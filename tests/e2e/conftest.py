"""End-to-end fixtures: a local CA, the real mosquitto stand-in, emulated boards driven by mpremote."""

import itertools

import pytest

from tests.tools import require

_names = itertools.count(1)


@pytest.fixture(scope="session")
def ca(tmp_path_factory):
    from upcert.pki.ca import LocalCa

    return LocalCa.init(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory):
    from upcert.pki.ca import LocalCa

    return LocalCa.init(tmp_path_factory.mktemp("other-ca"))


@pytest.fixture(scope="session")
def cloud(ca, tmp_path_factory):
    require("mosquitto")
    from upcert.cloud.standin import Cloud

    c = Cloud(tmp_path_factory.mktemp("cloud"), ca)
    c.up()
    yield c
    c.down()


@pytest.fixture
def board_factory(tmp_path):
    """make(**settings) -> a started EmulatedBoard; all are stopped after the test."""
    require("micropython")
    require("mpremote")
    from upcert.emu.board import EmulatedBoard

    boards = []

    def make(**settings):
        b = EmulatedBoard(tmp_path / f"board{next(_names)}", **settings)
        b.start()
        boards.append(b)
        return b

    yield make
    for b in boards:
        b.stop()


@pytest.fixture
def thing(request):
    """A thing name unique to the test (the broker's ACL is per certificate CN)."""
    return f"t{next(_names)}-{request.node.name[:40]}".replace("[", "-").replace("]", "")


def telemetry_config(thing, cloud, store="fs", interval_s=2, port=None):
    from upcert.board import provision as prov

    return prov.make_config(thing, f"localhost:{port or cloud.port}", store,
                            {"telemetry_interval_s": interval_s, "keepalive_s": 30},
                            wifi=("upcert-lab", "test-password"))


@pytest.fixture
def account(monkeypatch, tmp_path, capsys):
    """A moto AWS account (tests/aws_fakes.py) after `upcert aws setup --create-role`, with
    $UPCERT_HOME under tmp_path/home."""
    from upcert import cli

    from tests.aws_fakes import moto_account

    monkeypatch.setenv("UPCERT_WIFI_PASSWORD", "test-password")
    with moto_account(monkeypatch, tmp_path / "home") as acct:
        assert cli.main(["aws", "setup", "--create-role"]) == 0
        capsys.readouterr()
        yield acct
