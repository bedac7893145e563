"""Provisioning by claim on emulated boards against the local stand-in: a board that holds only
the batch's claim makes its own key at first boot, gets its certificate through the claim
template, erases the claim and reports as its own thing; a claim can do nothing else."""

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.conftest import telemetry_config


def _claim_config(thing, cloud, store="fs"):
    cfg = telemetry_config(thing, cloud, store)
    cfg["claim"] = {"template": "upcert-claim", "parameters": {"Batch": "b1"}}
    return cfg


def _provision_claim(board, cloud, thing, store="fs"):
    from upcert.board import provision as prov
    from upcert.pki import certs

    cert_path, key_path = cloud.claim_credentials()
    return prov.provision_claim(board.port, _claim_config(thing, cloud, store),
                                certs.load_certificate(cert_path),
                                certs.load_private_key(key_path), [cloud.ca.certificate],
                                log=lambda m: None)


def _files(board):
    from upcert.board.transport import Board

    with Board(board.port) as b:
        return b.exec("import os; print(sorted(os.listdir('/upcert.d')))").strip()


@pytest.mark.parametrize("store", ["fs", "nvs"])
def test_a_claimed_board_gets_its_own_identity_and_erases_the_claim(
        board_factory, cloud, thing, store):
    from upcert.board.provision import status
    from upcert.cloud.registry import Registry
    from upcert.cloud.standin import Subscription

    board = board_factory()
    sub = Subscription(cloud, f"things/{thing}/#")
    try:
        res = _provision_claim(board, cloud, thing, store)
        assert res.issuer_check == "claim"
        board.wait_for_line("upcert: claim: done", timeout_s=90)
        msg = sub.wait_for(lambda m: m.topic == f"things/{thing}/telemetry", timeout_s=60)
    finally:
        sub.close()
    body = json.loads(msg.payload)
    reg = Registry(cloud.registry_path)
    mine = reg.list(thing)
    assert [r["status"] for r in mine] == ["ACTIVE"], mine
    assert body["cert_id"] == mine[0]["cert_id"] != res.cert_id
    assert reg.get_thing(thing)["attributes"].get("Batch") == "b1"
    # the claim is still ACTIVE for the rest of the batch; this board no longer holds it
    assert reg.get(res.cert_id)["status"] == "ACTIVE"
    st = status(board.port)
    assert st["cert_id"] == mine[0]["cert_id"] and st["subject_cn"] == thing
    files = _files(board)
    assert "claim" not in files, files


def test_cli_provision_claim_two_boards_of_one_batch(board_factory, cloud, thing):
    # Two boards share the claim and claim at the same time: each gets only its own replies.
    from upcert.cloud.registry import Registry

    boards = [board_factory(), board_factory()]
    things = [thing + "-a", thing + "-b"]
    for b, t in zip(boards, things, strict=True):
        out = subprocess.run(
            [sys.executable, "-m", "upcert.cli", "provision", "--claim", "--port", b.port,
             "--thing", t, "--endpoint", f"localhost:{cloud.port}", "--cloud-dir",
             str(cloud.state_dir), "--wifi-ssid", "upcert-lab", "--telemetry-interval", "2"],
            capture_output=True, text=True, timeout=120,
            env=dict(os.environ, UPCERT_WIFI_PASSWORD="test-password"))
        assert out.returncode == 0, out.stderr
        assert "claim written" in out.stdout and "PRIVATE KEY" not in out.stdout + out.stderr
    for b in boards:
        b.wait_for_line("upcert: claim: done", timeout_s=90)
        b.wait_for_line("upcert: connected", timeout_s=60)
    reg = Registry(cloud.registry_path)
    for t in things:
        assert [r["status"] for r in reg.list(t)] == ["ACTIVE"]


def test_a_claim_is_refused_on_a_things_topics_and_templates(cloud, thing, tmp_path):
    # The claim certificate connects under any client id, but it is not that thing: the
    # identity plugin holds it to the claim policy (upcert.policy.claim_policy), so the broker
    # refuses (MQTT 5: "Not authorized") all but CreateCertificateFromCsr and the claim template.
    import paho.mqtt.client as mqtt

    from tests.host.test_cloud import close, publish_v5

    cert_path, key_path = cloud.claim_credentials()
    c = cloud.client(thing, str(cert_path), str(key_path), protocol=mqtt.MQTTv5)
    try:
        for topic in (f"things/{thing}/telemetry", f"$aws/things/{thing}/jobs/start-next",
                      "$aws/provisioning-templates/upcert-rotation/provision/json",
                      "$aws/certificates/create/json", "elsewhere"):
            assert publish_v5(c, topic, b"{}").getName() == "Not authorized", topic
        for topic in ("$aws/certificates/create-from-csr/json",
                      "$aws/provisioning-templates/upcert-claim/provision/json"):
            assert not publish_v5(c, topic, b"{}").is_failure, topic
    finally:
        close(c)


def _cut_points(n):
    # The first write, the middle and the last three: the store's last write of the new pair
    # (then RegisterThing, not yet done: the next boot's proof is refused and it claims again)
    # and the claim's erasure (two files). Every write of a store with few.
    return sorted({1, max(1, n // 2), *range(max(1, n - 2), n + 1)})


@pytest.mark.parametrize("store", ["fs", "nvs"])
def test_power_cut_at_any_write_of_a_claim_loses_nothing(board_factory, cloud, thing, store):
    """The writes of one claim are counted on a board, then a fresh board's claim is cut after
    each chosen write: it boots again, finishes (claims again, or proves the pair it stored),
    reports as its thing with a certificate the registry has ACTIVE, and holds no claim."""
    from upcert.board.provision import status
    from upcert.cloud.registry import Registry

    def claimed(name, cut):
        board = board_factory()
        from upcert.board import provision as prov
        from upcert.pki import certs

        cert_path, key_path = cloud.claim_credentials()
        prov.provision_claim(board.port, _claim_config(name, cloud, store),
                             certs.load_certificate(cert_path), certs.load_private_key(key_path),
                             [cloud.ca.certificate], reset=False, log=lambda m: None)
        board.arm_power_cut(cut)
        mark = board.log_size()
        board.power_cut()  # boots, and the agent starts the claim
        board.wait_for_line("upcert: published telemetry", timeout_s=120, since=mark)
        return board

    board = claimed(thing + "-n", 0)
    writes = board.write_count()
    assert writes >= 2, writes  # at least the pair and the claim's erasure
    reg = Registry(cloud.registry_path)
    for cut in _cut_points(writes):
        name = f"{thing}-{cut}"
        board = claimed(name, cut)
        assert board.power_cuts() == 1, f"cut after write {cut} of {writes} did not happen"
        st = status(board.port)
        held = [r for r in reg.list(name) if r["cert_id"] == st.get("cert_id")]
        assert held and held[0]["status"] == "ACTIVE", (cut, st, reg.list(name))
        # the pair is stored before RegisterThing: no ACTIVE certificate the board does not
        # hold (a claim made again leaves one PENDING_ACTIVATION, deleted when its token ends)
        others = [r["status"] for r in reg.list(name) if r["cert_id"] != st["cert_id"]]
        assert set(others) <= {"PENDING_ACTIVATION"} and len(others) <= 1, (cut, others)
        assert "claim" not in _files(board), (cut, _files(board))
        board.stop()


def test_a_claimed_chip_board_makes_its_key_in_the_atecc608(board_factory, cloud, thing):
    # A blank emulated ATECC608: the host locks it (slot layout, both zones) and writes the
    # claim; at first boot the key is made in the chip (GenKey in a free key slot), the CSR
    # signed by it, and the board connects with upcert's own TLS client.
    from upcert.board import chip
    from upcert.board import provision as prov
    from upcert.board.provision import status
    from upcert.cloud.registry import Registry
    from upcert.cloud.standin import Subscription
    from upcert.pki import certs

    board = board_factory(atecc608="blank")
    cfg = chip.make_chip_config(thing, f"localhost:{cloud.port}",
                                extra={"telemetry_interval_s": 2,
                                       "claim": {"template": "upcert-claim"}},
                                wifi=("upcert-lab", "test-password"))
    cert_path, key_path = cloud.claim_credentials()
    args = (board.port, cfg, certs.load_certificate(cert_path), certs.load_private_key(key_path),
            [cloud.ca.certificate])
    with pytest.raises(chip.ChipError, match="lock"):  # a blank chip is locked only when asked
        prov.provision_claim(*args, log=lambda m: None,
                             prepare=chip.claim_preparer(cfg["store"], False))
    with Subscription(cloud, f"things/{thing}/telemetry") as sub:
        prov.provision_claim(*args, log=lambda m: None,
                             prepare=chip.claim_preparer(cfg["store"], True, lambda m: None))
        board.wait_for_line("upcert: claim: done", timeout_s=120)
        body = json.loads(sub.wait_for(timeout_s=60).payload)
    assert body["tls"] == "upcert"
    st = status(board.port)
    assert st["store"]["kind"] == "atecc608" and st["cert_id"] == body["cert_id"]
    assert [r["status"] for r in Registry(cloud.registry_path).list(thing)] == ["ACTIVE"]
    assert "claim" not in _files(board)
