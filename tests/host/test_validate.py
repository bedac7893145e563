"""Bad input is refused before anything is written (hardening item 10), and a board's name
keeps its state inside $UPCERT_HOME/boards (item 12): one line on stderr, exit status 1, no
traceback, and the board (a stand-in that records being opened) never touched."""

import json

import pytest
from upcert import cli
from upcert.errors import UpcertError


class BoardOpened(Exception):
    """The stand-in board was opened: the input got past every check."""


@pytest.fixture
def opened(monkeypatch):
    """Serial ports opened by provision/provision_chip (the Board stand-in raises BoardOpened,
    which main() does not catch: a refusal that comes too late fails the test)."""
    ports = []

    class FakeBoard:
        def __init__(self, port, *a, **kw):
            ports.append(port)
            raise BoardOpened(port)

    monkeypatch.setattr("upcert.board.provision.Board", FakeBoard)
    monkeypatch.setattr("upcert.board.chip.Board", FakeBoard)
    return ports


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    from upcert.pki.ca import LocalCa

    return LocalCa.init(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def files(ca, tmp_path_factory):
    """--cert/--key/--root-ca files of a certificate for thing dev-1: the thing name given on
    the command line is then not checked by the local CA."""
    from upcert.pki import certs

    d = tmp_path_factory.mktemp("files")
    key = certs.generate_key("ec")
    cert = ca.issue_device("dev-1", key.public_key())
    certs.write_certificate(d / "dev.pem", cert)
    certs.write_private_key(d / "dev.key", key)
    certs.write_certificate(d / "root.pem", ca.certificate)
    return {"cert": cert, "args": ["--cert", str(d / "dev.pem"), "--key", str(d / "dev.key"),
                                   "--root-ca", str(d / "root.pem")]}


@pytest.fixture
def upcert(ca, tmp_path, monkeypatch, capsys):
    """upcert(*argv) -> (exit status, stderr) of cli.main, with $UPCERT_HOME in tmp_path."""
    monkeypatch.setenv("UPCERT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("UPCERT_WIFI_PASSWORD", raising=False)

    def run(*argv):
        rc = cli.main(list(argv))
        return rc, capsys.readouterr().err

    return run


def provision(upcert, ca, *args, endpoint="localhost:8883", thing="dev-1", cloud="none",
              no_wifi=True):
    # --no-wifi unless the test gives Wi-Fi settings or checks their absence (no_wifi=False)
    extra = ("--no-wifi",) if no_wifi and "--wifi-ssid" not in args else ()
    return upcert("provision", "--port", "/dev/ttyFAKE0", "--thing", thing, "--endpoint",
                  endpoint, "--ca-dir", str(ca.directory), "--cloud-dir", cloud, *args, *extra)


def one_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("upcert: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], err
    return lines[0]


# ---- thing names ----------------------------------------------------------------------------
BAD_THINGS = [("a b", "contains ' '"), ("x;id", "contains ';'"), ("$(id)", "contains '$'"),
              ("thing-ü", "contains 'ü'"), ("a\nb", "contains '\\n'"),
              ("ab\udcff", "contains '\\udcff'")]  # \udcff: the byte 0xff of a non-UTF-8 argv


@pytest.mark.parametrize("thing,why", BAD_THINGS, ids=repr)
def test_bad_thing_name_refused_before_the_board(upcert, ca, files, opened, thing, why):
    # with the user's own certificate files the local CA does not see the name either
    rc, err = provision(upcert, ca, *files["args"], thing=thing)
    assert rc == 1 and opened == []
    one_line(err, "thing name", why, "AWS IoT thing names")


@pytest.mark.parametrize("thing,why", BAD_THINGS[:2], ids=repr)
def test_bad_thing_name_refused_with_the_local_ca(upcert, ca, opened, thing, why):
    rc, err = provision(upcert, ca, thing=thing)
    assert rc == 1 and opened == []
    one_line(err, "thing name", why)


@pytest.mark.parametrize("store", ["fs", "atecc608"])
def test_thing_name_over_64_refused_with_the_local_ca(upcert, ca, opened, store):
    # X.509 ub-common-name: the local CA puts the thing name in the CN
    rc, err = provision(upcert, ca, "--store", store, thing="t" * 65)
    assert rc == 1 and opened == []
    one_line(err, "65 characters", "limits to 64")


def test_thing_name_over_64_is_fine_with_own_files(upcert, ca, files, opened):
    # AWS takes 128; only a local-CA certificate's CN is limited to 64
    with pytest.raises(BoardOpened):
        provision(upcert, ca, *files["args"], thing="t" * 100)
    assert opened == ["/dev/ttyFAKE0"]


# ---- endpoints ------------------------------------------------------------------------------
BAD_ENDPOINTS = [
    ("", "endpoint is empty"),
    (":8883", "no host name before ':'"),
    ("localhost:8883:1", "more than one ':'"),
    ("http://xxxx-ats.iot.eu-west-1.amazonaws.com", "without 'http://'"),
    ("https://xxxx-ats.iot.eu-west-1.amazonaws.com:8883", "without 'https://'"),
    (" localhost", "white space"),
    ("localhost:8883 ", "white space"),
    ("[::1]:8883", "IPv6 address literals are not supported"),
    ("::1", "IPv6 address literals are not supported"),
    ("a" * 300, "has 300 characters"),
    ("localhost:\u0663", "port '\u0663' is not a whole number in the digits 0-9"),  # Arabic 3
    ("localhost:", "port '' is not a whole number"),
    ("localhost:0", "port 0 is out of range"),
    ("localhost:65536", "port 65536 is out of range"),
    ("a..example.com", "has an empty part"),
    ("local\nhost", "has the part 'local\\nhost'"),
    ("a_b.example.com", "has the part 'a_b'"),
    ("localhost/mqtt", "without a path"),
]


@pytest.mark.parametrize("endpoint,why", BAD_ENDPOINTS, ids=repr)
def test_bad_endpoint_refused_before_the_board(upcert, ca, opened, endpoint, why):
    rc, err = provision(upcert, ca, endpoint=endpoint)
    assert rc == 1 and opened == []
    line = one_line(err, "endpoint", why)
    assert len(line) < 400  # a 300-character input is shown shortened


@pytest.mark.parametrize("text,expected", [
    ("localhost", ("localhost", 8883)),
    ("xxxx-ats.iot.eu-west-1.amazonaws.com", ("xxxx-ats.iot.eu-west-1.amazonaws.com", 8883)),
    ("xxxx-ats.iot.eu-west-1.amazonaws.com:443", ("xxxx-ats.iot.eu-west-1.amazonaws.com", 443)),
    ("127.0.0.1:1883", ("127.0.0.1", 1883)),
    ("a" * 63 + "." + "b" * 63, ("a" * 63 + "." + "b" * 63, 8883)),
])
def test_good_endpoints(text, expected):
    from upcert import validate

    assert validate.endpoint(text) == expected


# ---- numbers --------------------------------------------------------------------------------
@pytest.mark.parametrize("value,why", [
    ("-5", "-5 is out of range: give 1..86400 seconds"),
    ("0", "0 is out of range"),  # was dropped silently (60 s)
    ("86401", "86401 is out of range"),
    ("\u0663", "is not a whole number in the digits 0-9"),  # argparse's int() took it as 3
    ("5s", "is not a whole number"),
])
def test_bad_telemetry_interval_refused_before_the_board(upcert, ca, opened, value, why):
    rc, err = provision(upcert, ca, "--telemetry-interval", value)
    assert rc == 1 and opened == []
    one_line(err, "--telemetry-interval", why)


@pytest.mark.parametrize("value", ["100000000", "3651", "0", "-5", "\u0663\u0660"])
def test_bad_days_refused_before_the_board(upcert, ca, opened, value):
    rc, err = provision(upcert, ca, "--days", value)
    assert rc == 1 and opened == []
    one_line(err, "--days", "1..3650 days")


def test_bad_days_refused_for_the_chip(upcert, ca, opened):
    rc, err = provision(upcert, ca, "--store", "atecc608", "--days", "100000000")
    assert rc == 1 and opened == []
    one_line(err, "--days 100000000 is out of range")
    rc, err = upcert("chip", "rotate", "--port", "/dev/ttyFAKE0", "--ca-dir", str(ca.directory),
                     "--days", "100000000")
    assert rc == 1 and opened == []
    one_line(err, "--days 100000000 is out of range")


def test_good_options_reach_the_board(upcert, ca, opened, monkeypatch):
    monkeypatch.setenv("UPCERT_WIFI_PASSWORD", "correct horse")
    with pytest.raises(BoardOpened):
        provision(upcert, ca, "--telemetry-interval", "5", "--days", "3650",
                  "--wifi-ssid", "lab", thing="t:1_a-" + "x" * 58)  # 64 characters
    assert opened == ["/dev/ttyFAKE0"]


# ---- Wi-Fi ----------------------------------------------------------------------------------
def test_bad_wifi_refused_and_the_password_never_shown(upcert, ca, opened, monkeypatch):
    rc, err = provision(upcert, ca, "--wifi-ssid", "lab\udcff")
    assert rc == 1 and opened == []
    one_line(err, "Wi-Fi SSID")
    rc, err = provision(upcert, ca, "--wifi-ssid", "s" * 33)
    assert rc == 1 and opened == []
    one_line(err, "Wi-Fi SSID")
    secret = "hunter2-" + "p" * 60
    monkeypatch.setenv("UPCERT_WIFI_PASSWORD", secret)
    rc, err = provision(upcert, ca, "--wifi-ssid", "lab")
    assert rc == 1 and opened == []
    one_line(err, "UPCERT_WIFI_PASSWORD", "at most 64 bytes")
    assert "hunter2" not in err


# ---- the library: provision() checks the config it is given ---------------------------------
@pytest.mark.parametrize("thing,endpoint,extra,why", [
    ("a b", "localhost", {}, "thing name 'a b'"),
    ("dev-1", "", {}, "endpoint is empty"),
    ("dev-1", "localhost", {"telemetry_interval_s": -5}, "'telemetry_interval_s' -5"),
    ("dev-1", "localhost", {"telemetry_interval_s": "60"}, "is text"),
    ("dev-1", "localhost", {"keepalive_s": 5}, "'keepalive_s' 5 is out of range"),
    ("dev-1", "localhost", {"port": 70000}, "'port' 70000 is out of range"),
    ("dev-1", "localhost", {"queue": 0}, "'queue' 0 is out of range: give 1..64"),
    ("dev-1", "localhost", {"queue": "8"}, "'queue' '8' is text"),
])
def test_library_provision_refuses_a_bad_config_before_the_board(ca, opened, thing, endpoint,
                                                                 extra, why):
    from upcert.board import provision as prov
    from upcert.pki import certs

    cfg = prov.make_config(thing, endpoint, "fs", extra)  # make_config lets these through
    key = certs.generate_key("ec")
    cert = ca.issue_device("dev-1", key.public_key())
    with pytest.raises(UpcertError, match=why) as exc:
        prov.provision("/dev/ttyFAKE0", cfg, cert, key, [ca.certificate], log=lambda m: None)
    assert "\n" not in str(exc.value)
    assert opened == []


# ---- the stand-in's registry ----------------------------------------------------------------
@pytest.fixture
def stand_in(ca, tmp_path):
    """A local stand-in's state folder (cloud.json as `cloud up` writes it; mosquitto is not
    needed to read the registry) and its Registry."""
    from upcert.cloud.registry import Registry

    d = tmp_path / "cloud"
    d.mkdir()
    (d / "cloud.json").write_text(json.dumps({
        "host": "127.0.0.1", "port": 1, "pid": 0, "server_cert": str(ca.server_pem),
        "server_key": str(ca.server_key), "extra_conf": "", "ca_dir": str(ca.directory),
        "services": True, "cert_validity": "365d", "templates": ["upcert-rotation"],
        "registry": str(d / "registry.sqlite3"), "fault": None}))
    return d, Registry(d / "registry.sqlite3")


def test_rerun_with_a_certificate_registered_to_another_thing(upcert, ca, files, opened,
                                                             stand_in):
    cloud, registry = stand_in
    registry.register(files["cert"], "dev-1")  # the first run registered it
    rc, err = provision(upcert, ca, *files["args"], thing="dev-2", cloud=str(cloud))
    assert rc == 1 and opened == []
    one_line(err, "already in the local stand-in's registry", "'dev-1', not 'dev-2'")


@pytest.mark.parametrize("status,why", [("REVOKED", "REVOKED"),
                                        ("INACTIVE", "upcert certs activate")])
def test_rerun_with_a_certificate_not_active(upcert, ca, files, opened, stand_in, status, why):
    cloud, registry = stand_in
    rec = registry.register(files["cert"], "dev-1")
    registry.set_status(rec["cert_id"], status)
    rc, err = provision(upcert, ca, *files["args"], cloud=str(cloud))
    assert rc == 1 and opened == []
    one_line(err, why)


def test_rerun_with_the_same_active_certificate_goes_ahead(upcert, ca, files, opened, stand_in):
    # the same files for the same thing again (a wiped board): nothing to refuse, and the
    # registration is not repeated (Registry.register would refuse it after the write)
    cloud, registry = stand_in
    registry.register(files["cert"], "dev-1")
    with pytest.raises(BoardOpened):
        provision(upcert, ca, *files["args"], cloud=str(cloud))
    assert opened == ["/dev/ttyFAKE0"]


# ---- board names (item 12) ------------------------------------------------------------------
@pytest.fixture
def boards(monkeypatch):
    """State folders the CLI hands to the emulator (which is not started)."""
    seen = []

    class FakeBoard:
        def __init__(self, state_dir, **kw):
            seen.append(state_dir)

        def start(self):
            return "/dev/pts/fake"

    monkeypatch.setattr("upcert.emu.board.EmulatedBoard", FakeBoard)
    monkeypatch.setattr("upcert.emu.board.stop_board", lambda d: seen.append(d))
    monkeypatch.setattr("upcert.emu.board.main", lambda argv: seen.append(argv[2]))
    return seen


@pytest.mark.parametrize("name", ["../../x", "../x", "..", ".", "a/b", "/tmp/x", "a b", "",
                                  "b" * 65, "b\n"])
@pytest.mark.parametrize("sub", ["start", "run", "stop"])
def test_board_name_outside_boards_refused(upcert, boards, tmp_path, name, sub):
    rc, err = upcert("board", sub, "--name", name)
    assert rc == 1 and boards == []
    one_line(err, "board name")
    assert not (tmp_path / "x").exists() and not (tmp_path / "home" / "x").exists()


def test_board_folder_linked_outside_refused(upcert, boards, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "home" / "boards").mkdir(parents=True)
    (tmp_path / "home" / "boards" / "b1").symlink_to(outside)
    rc, err = upcert("board", "start", "--name", "b1")
    assert rc == 1 and boards == []
    one_line(err, "outside", "--state")
    assert list(outside.iterdir()) == []


def test_good_board_name_stays_inside(upcert, boards, tmp_path):
    rc, _ = upcert("board", "start", "--name", "lab-board_2")
    assert rc == 0
    assert [str(p) for p in boards] == [str(tmp_path / "home" / "boards" / "lab-board_2")]


def test_no_wifi_settings_refused_unless_the_board_needs_none(upcert, ca, opened, tmp_path,
                                                               monkeypatch):
    # esp32_generic joins over Wi-Fi: without --wifi-ssid the board would loop "Wi-Fi is down"
    rc, err = provision(upcert, ca, no_wifi=False)
    assert rc == 1 and opened == []
    one_line(err, "joins the network over Wi-Fi", "--wifi-ssid NAME", "--no-wifi")
    rc, err = provision(upcert, ca, "--wifi-ssid", "lab", "--no-wifi")
    assert rc == 1 and opened == []
    one_line(err, "contradict")
    with pytest.raises(BoardOpened):  # said on purpose: the board is on a network without it
        provision(upcert, ca, "--no-wifi", no_wifi=False)
    # a board definition that brings its own network needs no Wi-Fi settings
    from upcert.board import firmware

    own = tmp_path / "boards" / "eth_board"
    own.mkdir(parents=True)
    (own / "board.py").write_text('NAME = "eth"\nNETWORK = "own"\n')
    monkeypatch.setattr(firmware, "BOARDS", tmp_path / "boards")
    assert firmware.board_network("eth_board") == "own"
    with pytest.raises(BoardOpened):
        provision(upcert, ca, "--board", "eth_board", no_wifi=False)
    (own / "board.py").write_text('NETWORK = "lte"\n')
    rc, err = provision(upcert, ca, "--board", "eth_board", no_wifi=False)
    assert rc == 1 and opened == ["/dev/ttyFAKE0"] * 2
    one_line(err, "NETWORK = 'lte'")
