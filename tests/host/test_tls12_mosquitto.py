"""upcert's own TLS 1.2 client (firmware/upcert/tls12.py on the MicroPython unix port) against a
real mosquitto (OpenSSL) with each of AWS IoT's four TLS 1.2 suites it offers: the stand-in's
broker (TLS 1.2 only, client certificate required) narrowed to one suite per case, a P-256
server chain for the ECDSA suites and an RSA-2048 one for the RSA suites (upcert.pki's local
CA). The device connects through tls12.Connector, sends an MQTT CONNECT and a QoS 1 PUBLISH
with upcert.mqtt and gets the PUBACK; an admin subscriber sees the message arrive."""

import json
import os
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from upcert.cloud.standin import Cloud, Subscription
from upcert.pki.ca import LocalCa
from upcert.pki.certs import generate_key

from tests.host.test_tls12_interop import SUITES
from tests.tools import ROOT, micropython_cmd, require

DEVICE = r"""
import json, sys
from upcert import mqtt, tls12
from upcert.clock import Clock
a = json.load(open(sys.argv[1]))
out = {}
try:
    sock = tls12.Connector(bytes.fromhex(a["cert"]), bytes.fromhex(a["key"]),
                           [bytes.fromhex(a["root"])], Clock(), timeout_s=10).connect(
                               "localhost", a["port"])
    out["cipher"] = sock.cipher()[0]
    out["tls"] = sock.tls
    c = mqtt.Client(a["thing"], keepalive_s=60)
    c.connect(sock)
    c.publish("things/%s/telemetry" % a["thing"], a["msg"].encode(), qos=1)  # waits for PUBACK
    out["puback"] = True
    c.disconnect()
except Exception as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
print("RESULT " + json.dumps(out))
"""


def _der(obj):
    return obj.public_bytes(serialization.Encoding.DER).hex()


@pytest.fixture(scope="module")
def cas(tmp_path_factory):
    require("micropython")
    require("mosquitto")
    return {kind: LocalCa.init(tmp_path_factory.mktemp(f"ca-{kind}"), key_type=kind)
            for kind in ("ec", "rsa")}


@pytest.mark.parametrize("suite", list(SUITES))
def test_mqtt_publish_over_each_suite_with_mosquitto(cas, tmp_path, suite):
    ca = cas["ec" if "ECDSA" in suite else "rsa"]
    thing = "suite-" + suite.lower().replace("-", "")[:20]
    key = generate_key("ec")
    args = {
        "thing": thing, "msg": f"over {suite}", "root": _der(ca.certificate),
        "cert": _der(ca.issue_device(thing, key.public_key())),
        "key": key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).hex(),
    }
    with Cloud(tmp_path / "cloud", ca, services=False, ciphers=[suite]) as cloud:
        assert f"ciphers {suite}\n" in cloud.conf_path.read_text()
        args["port"] = cloud.port
        path = tmp_path / "args.json"
        path.write_text(json.dumps(args))
        os.chmod(path, 0o600)  # holds the throwaway device key
        (tmp_path / "dev.py").write_text(DEVICE)
        with Subscription(cloud, f"things/{thing}/telemetry") as sub:
            proc = subprocess.run(micropython_cmd("2M") + [str(tmp_path / "dev.py"), str(path)],
                                  capture_output=True, text=True, timeout=120,
                                  env=dict(os.environ, MICROPYPATH=str(ROOT / "firmware")))
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
            out = json.loads(lines[-1][7:])
            assert "error" not in out, (out, cloud.log_text()[-1500:])
            assert out == {"cipher": SUITES[suite], "tls": "upcert", "puback": True}
            assert sub.wait_for(timeout_s=10).payload == f"over {suite}".encode()


def test_a_suite_outside_aws_list_is_refused_by_the_stand_in(cas, tmp_path):
    from upcert.cloud.standin import CloudError

    with pytest.raises(CloudError, match="AWS IoT's TLS 1.2 suites"):
        Cloud(tmp_path, cas["ec"], services=False, ciphers=["ECDHE-ECDSA-CHACHA20-POLY1305"])
    with pytest.raises(CloudError, match="AWS IoT's TLS 1.2 suites"):
        Cloud(tmp_path, cas["ec"], services=False, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
