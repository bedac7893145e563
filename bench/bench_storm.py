"""Rotation storm against the local AWS IoT stand-in: N devices (paho, real TLS, device
certificates) each do create-from-csr (P-256 CSR) + provision at once; prints requests/s and how
many succeeded, for a local RSA CA and a local EC CA. Usage: bench_storm.py [--devices 200]
[--concurrent 300] [--ca rsa,ec].
"""

import argparse
import gc
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from upcert.cloud.registry import Registry
from upcert.cloud.standin import Cloud
from upcert.pki.ca import LocalCa
from upcert.pki.certs import generate_key, write_certificate, write_private_key

CSR = "$aws/certificates/create-from-csr/json"
PROVISION = "$aws/provisioning-templates/upcert-rotation/provision/json"
WAVE = 50  # connections opened at a time (TLS handshakes are the broker's heaviest work)


class Device:
    """One device: connect, subscribe, then CSR -> token -> provision when fired."""

    def __init__(self, cloud, thing, certfile, keyfile, csr_pem):
        self.thing, self.csr_pem = thing, csr_pem
        self.done, self.ok, self.error = threading.Event(), False, None
        self.started = self.finished = 0.0
        self.client = cloud.client(thing, certfile, keyfile)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.subscribe([(f"{t}/{r}", 1) for t in (CSR, PROVISION)
                               for r in ("accepted", "rejected")])
        if not subscribed.wait(30):
            raise RuntimeError(f"{thing}: no SUBACK")

    def fire(self):
        self.started = time.perf_counter()
        body = json.dumps({"certificateSigningRequest": self.csr_pem})
        self.client.publish(CSR, body, qos=1)

    def _on_message(self, client, userdata, msg):
        reply = json.loads(msg.payload)
        if msg.topic.endswith("/rejected"):
            self.error = f"{msg.topic}: {reply.get('errorCode')} {reply.get('errorMessage')}"
        elif msg.topic == CSR + "/accepted":
            token = reply["certificateOwnershipToken"]
            client.publish(PROVISION, json.dumps({"certificateOwnershipToken": token}), qos=1)
            return
        else:
            self.ok = reply.get("thingName") == self.thing
        self.finished = time.perf_counter()
        self.done.set()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
        self.client = None  # paho frees its socket pair (descriptors) with the object


def csr_pem(thing):
    key = generate_key("ec")  # P-256, as the device makes it
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, thing)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def make_wave(ca, workdir, numbers):
    """(thing, certfile, keyfile, csr) for each device number, issued by ca."""
    out = []
    for i in numbers:
        thing, key = f"storm{i:04d}", generate_key("ec")
        certfile, keyfile = workdir / f"{thing}.pem", workdir / f"{thing}.key"
        write_private_key(keyfile, key)
        write_certificate(certfile, ca.issue_device(thing, key.public_key()))
        out.append((thing, certfile, keyfile, csr_pem(thing)))
    return out


def storm(key_type, n, workdir, concurrent):
    """Storms of up to `concurrent` devices (paho's select() caps one process near 330
    clients: 3 descriptors each, FD_SETSIZE 1024) until n devices have asked."""
    ca = LocalCa.init(workdir / "ca", key_type=key_type)
    devices, connect_s, storm_s = [], 0.0, 0.0
    with Cloud(workdir / "cloud", ca) as cloud:
        for first in range(0, n, concurrent):
            group, t0 = [], time.perf_counter()
            for start in range(first, min(n, first + concurrent), WAVE):
                wave = make_wave(ca, workdir, range(start, min(n, first + concurrent,
                                                               start + WAVE)))
                group += [Device(cloud, *args) for args in wave]
            t1 = time.perf_counter()
            for d in group:  # all at once
                d.fire()
            for d in group:
                d.done.wait(max(0.1, 90 - (time.perf_counter() - t1)))
            connect_s, storm_s = connect_s + t1 - t0, storm_s + time.perf_counter() - t1
            for d in group:
                d.close()
            gc.collect()
            devices += group
        active = sum(r["status"] == "ACTIVE" for r in Registry(cloud.registry_path).list())
        reloads = cloud.log_text().count("Reloading config.")  # one CRL rewrite each
    ok = [d for d in devices if d.ok]
    latencies = sorted(d.finished - d.started for d in ok)
    errors = [d.error or f"{d.thing}: no reply" for d in devices if not d.ok]
    return {"ca": key_type, "devices": n, "concurrent": min(n, concurrent),
            "succeeded": len(ok), "registered_active": active,
            "connect_s": round(connect_s, 2), "storm_s": round(storm_s, 2),
            "requests_per_s": round(2 * len(ok) / storm_s, 1), "crl_reloads": reloads,
            "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
            "max_ms": round(1000 * latencies[-1], 1) if latencies else None,
            "errors": errors[:5]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--ca", default="rsa,ec", help="local CA key types to try, comma-separated")
    ap.add_argument("--concurrent", type=int, default=300, help="devices connected at once")
    args = ap.parse_args(argv)
    failed = False
    for key_type in args.ca.split(","):
        with tempfile.TemporaryDirectory(prefix="upcert-storm-") as tmp:
            result = storm(key_type, args.devices, Path(tmp), args.concurrent)
        print(json.dumps(result))
        failed |= result["succeeded"] != args.devices
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
