"""Every refusal ends in a message a person can act on, and bad input never reaches the board."""

import datetime as dt

import pytest

from tests.e2e.conftest import telemetry_config


def _creds(ca, thing, **kw):
    from upcert.pki import certs

    key = certs.generate_key("ec")
    return ca.issue_device(thing, key.public_key(), **kw), key


def _board_has_no_identity(board):
    from upcert.board.transport import Board

    with Board(board.port) as b:
        return b.sha256_file("/upcert.d/config.json") is None and \
            b.sha256_file("/upcert.d/cert.der") is None


def _provision(board, cloud, ca, thing, cert, key, roots, port=None):
    from upcert.board import provision as prov

    cfg = telemetry_config(thing, cloud, port=port)
    return prov.provision(board.port, cfg, cert, key, roots, log=lambda m: None)


@pytest.fixture
def second_cloud(tmp_path):
    """Start a broker with a given server certificate (another CA / another name)."""
    from upcert.cloud.standin import Cloud

    started = []

    def make(ca, server_cert, server_key):
        c = Cloud(tmp_path / f"cloud{len(started)}", ca, server_cert=server_cert,
                  server_key=server_key)
        c.up()
        started.append(c)
        return c

    yield make
    for c in started:
        c.down()


def test_server_certificate_from_another_ca(board_factory, ca, other_ca, second_cloud, thing):
    rogue = second_cloud(ca, other_ca.server_pem, other_ca.server_key)
    board = board_factory()
    cert, key = _creds(ca, thing)
    _provision(board, rogue, ca, thing, cert, key, [ca.certificate])
    line = board.wait_for_line("upcert: connection failed", timeout_s=60)
    assert "server certificate not trusted" in line


def test_server_hostname_mismatch(board_factory, ca, second_cloud, thing, tmp_path):
    from upcert.pki import certs

    scert, skey = ca.issue_server(["wrong.example"])
    cert_path, key_path = tmp_path / "wrong.pem", tmp_path / "wrong.key"
    certs.write_certificate(cert_path, scert)
    certs.write_private_key(key_path, skey)
    wrong = second_cloud(ca, cert_path, key_path)
    board = board_factory()
    cert, key = _creds(ca, thing)
    _provision(board, wrong, ca, thing, cert, key, [ca.certificate])
    line = board.wait_for_line("upcert: connection failed", timeout_s=60)
    assert "server certificate not trusted" in line and "localhost" in line


def test_device_certificate_from_another_ca(board_factory, cloud, ca, other_ca, thing):
    board = board_factory()
    cert, key = _creds(other_ca, thing)
    res = _provision(board, cloud, ca, thing, cert, key, [ca.certificate])
    assert res.issuer_check.startswith("cannot tell")
    line = board.wait_for_line("upcert: connection failed", timeout_s=60)
    assert "rejected our certificate" in line


def test_key_certificate_mismatch_caught_before_any_write(board_factory, cloud, ca, thing):
    from upcert.errors import UpcertError
    from upcert.pki import certs

    board = board_factory()
    cert, _ = _creds(ca, thing)
    other_key = certs.generate_key("ec")
    with pytest.raises(UpcertError, match="(?i)key"):
        _provision(board, cloud, ca, thing, cert, other_key, [ca.certificate])
    assert _board_has_no_identity(board)


def test_expired_certificate_refused_by_provision_and_by_the_agent(board_factory, cloud, ca,
                                                                    thing):
    from upcert.board.transport import Board
    from upcert.errors import UpcertError
    from upcert.pki import certs

    board = board_factory()
    now = dt.datetime.now(dt.timezone.utc)
    old, key = _creds(ca, thing, not_before=now - dt.timedelta(days=400),
                      not_after=now - dt.timedelta(days=1))
    with pytest.raises(UpcertError, match="(?i)expired"):
        _provision(board, cloud, ca, thing, old, key, [ca.certificate])
    assert _board_has_no_identity(board)
    # A certificate that expires in the field: the agent refuses to present it.
    good, key2 = _creds(ca, thing)
    _provision(board, cloud, ca, thing, good, key2, [ca.certificate])
    board.wait_for_line("upcert: connected", timeout_s=60)
    expired, key3 = _creds(ca, thing, not_before=now - dt.timedelta(days=400),
                           not_after=now - dt.timedelta(days=1))
    with Board(board.port) as b:
        b.write_file("/upcert.d/cert.der", certs.cert_to_der(expired))
        b.write_file("/upcert.d/key.der", certs.key_to_der(key3))
        mark = board.log_size()
        b.hard_reset()
    line = board.wait_for_line("upcert: .*expired", timeout_s=60, since=mark)
    assert "device certificate expired" in line


def test_unset_clock_refuses_to_connect(board_factory, cloud, ca, thing):
    board = board_factory(clock="unset", ntp="unreachable")
    cert, key = _creds(ca, thing)
    _provision(board, cloud, ca, thing, cert, key, [ca.certificate])
    line = board.wait_for_line("upcert: clock not set", timeout_s=60)
    assert "2000-01-01" in line
    # The agent connects only once the clock is trusted: its next attempt (after the backoff)
    # still refuses, and nothing connected before that.
    again = board.log_path.read_bytes().index(b"upcert: clock not set") + 1
    board.wait_for_line("upcert: clock not set", timeout_s=60, since=again)
    assert "upcert: connected" not in board.log_text()
