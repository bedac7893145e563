"""upcert's own TLS client on an emulated board with its key on the flash: chosen by the config
("tls": "upcert"), and over the stand-in's port 443, which lets MQTT through only with ALPN
x-amzn-mqtt-ca (the agent offers it: "alpn" in the config). Real mosquitto, real HAProxy."""

import json

import pytest

from tests.e2e.conftest import telemetry_config
from tests.tools import require


@pytest.fixture(scope="module")
def cloud443(ca, tmp_path_factory):
    require("mosquitto")
    require("haproxy")
    from upcert.cloud.standin import Cloud

    with Cloud(tmp_path_factory.mktemp("cloud443"), ca, alpn=True) as c:
        yield c


def _run(board, cloud, ca, thing, port, extra):
    from upcert.board import provision as prov
    from upcert.cloud.registry import Registry
    from upcert.cloud.standin import Subscription

    cfg = telemetry_config(thing, cloud, port=port)
    cfg.update(extra)
    cert, key, roots = prov.local_credentials(ca.directory, thing)
    with Subscription(cloud, f"things/{thing}/telemetry") as sub:
        res = prov.provision(board.port, cfg, cert, key, roots, log=lambda m: None,
                             registry=Registry(cloud.registry_path))
        line = board.wait_for_line("upcert: connected", timeout_s=90)
        body = json.loads(sub.wait_for(lambda m: b'"tls"' in m.payload, timeout_s=60).payload)
    return res, line, body


def test_software_key_over_upcerts_tls(board_factory, cloud443, ca, thing):
    board = board_factory(heapsize="200K")  # emu/config.py OWN_TLS_HEAPSIZE: no mbedTLS session
    res, line, body = _run(board, cloud443, ca, thing, cloud443.port, {"tls": "upcert"})
    assert "(upcert)" in line and "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256" in line, line
    assert body["tls"] == "upcert" and body["cert_id"] == res.cert_id, body


def test_mqtt_over_the_443_listener_with_alpn(board_factory, cloud443, ca, thing):
    board = board_factory(heapsize="200K")
    res, line, body = _run(board, cloud443, ca, thing, cloud443.alpn_port,
                           {"alpn": ["x-amzn-mqtt-ca"]})
    assert f"localhost:{cloud443.alpn_port}" in board.log_text()
    assert "(upcert)" in line and body["tls"] == "upcert", (line, body)


def test_without_alpn_the_443_listener_refuses_and_the_agent_says_so(board_factory, cloud443,
                                                                     ca, thing):
    from upcert.board import provision as prov

    board = board_factory(heapsize="200K")
    cfg = telemetry_config(thing, cloud443, port=cloud443.alpn_port)
    cfg.update({"tls": "upcert", "alpn": []})  # upcert's client, but no ALPN offered
    cert, key, roots = prov.local_credentials(ca.directory, thing)
    prov.provision(board.port, cfg, cert, key, roots, log=lambda m: None)
    line = board.wait_for_line("upcert: connection failed", timeout_s=90)
    assert "closed" in line, line
    assert "upcert: connected" not in board.log_text()
