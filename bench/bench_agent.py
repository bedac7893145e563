"""Benchmarks of the foundation (issue #2); figures go into the README.

1. Connect + first QoS1 publish acknowledged: the device stack (tlsconn + mqtt over umqtt.simple)
   on the unix port vs a CPython paho-mqtt client with the same certificate, same broker,
   alternating runs; median of each and the ratio. Timed inside each process, from TCP connect
   to PUBACK (interpreter start-up excluded), through the same wire tap.
2. Bytes on the wire for that exchange, both directions, from the wire tap.
3. The smallest GC heap (`micropython -X heapsize`) with which the link layer does connect +
   QoS1 publish + a command round trip, and the smallest emulated-board heap with which the
   whole agent (config, store, x509, clock, agent) gets a ping answered.
4. Provisioning one fresh emulated board end to end (firmware, credentials, read-back, test load).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host_tools"))

import paho.mqtt.client as paho  # noqa: E402
from upcert import certs, firmware  # noqa: E402
from upcert import provision as prov  # noqa: E402
from upcert.certs import LocalCa  # noqa: E402
from upcert.cloud import Cloud, Subscription  # noqa: E402
from upcert.emulator import EmulatedBoard, find_micropython  # noqa: E402
from upcert.wiretap import WireTap  # noqa: E402

RUNS = int(os.environ.get("UPCERT_BENCH_RUNS", "10"))

DEVICE = r"""
import sys, time
from upcert import tlsconn, mqtt
d, host, port, cmd = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def rd(n):
    with open(d + "/" + n, "rb") as f:
        return f.read()
ctx = tlsconn.make_context(rd("cert.der"), rd("key.der"), [rd("ca.der")])
t0 = time.ticks_us()
sock = tlsconn.Connector(ctx).connect(host, port)
c = mqtt.Client("bench-dev", keepalive_s=60)
c.connect(sock)
c.publish("things/bench-dev/telemetry", b'{"seq":1}', qos=1)
print("US", time.ticks_diff(time.ticks_us(), t0))
if cmd == "roundtrip":
    got = []
    c.set_callback(lambda t, m: got.append(m))
    c.subscribe("things/bench-dev/commands")
    c.publish("things/bench-dev/commands", b'{"cmd":"ping","id":"1"}', qos=1)
    t1 = time.ticks_ms()
    while not got and time.ticks_diff(time.ticks_ms(), t1) < 10000:
        c.service()
        time.sleep_ms(10)
    c.publish("things/bench-dev/replies", b'{"ok":true}', qos=1)
    print("ROUNDTRIP", len(got))
c.disconnect()
"""


# Bare umqtt.simple 1.3.4 with the tls module (the baseline DESIGN.md measured at 1.28x paho):
# its connect() creates the socket and calls ussl.wrap_socket, so a tiny ussl shim supplies it.
BARE = r"""
import sys, time, tls
d, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rd(n):
    with open(d + "/" + n, "rb") as f:
        return f.read()
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(rd("ca.der"))
ctx.load_cert_chain(rd("cert.der"), rd("key.der"))
ctx.verify_mode = tls.CERT_REQUIRED
class ussl:
    @staticmethod
    def wrap_socket(sock, **kw):
        return ctx.wrap_socket(sock, server_hostname=host)
sys.modules["ussl"] = ussl
from umqtt.simple import MQTTClient
t0 = time.ticks_us()
c = MQTTClient("bench-bare", host, port, ssl=True)
c.connect()
c.publish(b"things/bench-bare/telemetry", b'{"seq":1}', qos=1)
print("US", time.ticks_diff(time.ticks_us(), t0))
c.disconnect()
"""

PAHO = r"""
import sys, threading, time
import paho.mqtt.client as paho
folder, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
done = threading.Event()
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-paho")
c.tls_set(ca_certs=ca, certfile=folder + "/paho.pem", keyfile=folder + "/paho.key")
c.on_publish = lambda *a: done.set()
c.on_connect = lambda cl, *a: cl.publish("things/bench-paho/telemetry", b'{"seq":1}', qos=1)
t0 = time.perf_counter()
c.connect("localhost", port, keepalive=60)
while not done.is_set():
    c.loop(timeout=0.01)
print("US", int((time.perf_counter() - t0) * 1e6))
c.disconnect()
"""


def whole_process(cmd, env=None):
    """Wall time of a whole process run (interpreter start-up included) and its own timing."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    wall = time.perf_counter() - t0
    if "US" not in out.stdout:
        raise SystemExit(f"run failed: {cmd}\n{out.stdout}\n{out.stderr}")
    return wall, int(out.stdout.split("US", 1)[1].split()[0]) / 1e6


def bench_processes(folder, port, ca_pem):
    """Alternating whole-process runs: agent stack, bare umqtt.simple, paho."""
    env = dict(os.environ, MICROPYPATH=f"{folder}/lib")
    runs = {"agent": [], "bare_umqtt": [], "paho": []}
    for _ in range(RUNS):
        runs["agent"].append(whole_process(
            [find_micropython(), f"{folder}/dev.py", str(folder), "localhost", str(port), "time"],
            env))
        runs["bare_umqtt"].append(whole_process(
            [find_micropython(), f"{folder}/bare.py", str(folder), "localhost", str(port)], env))
        runs["paho"].append(whole_process(
            [sys.executable, f"{folder}/paho_run.py", str(folder), str(port), ca_pem]))
    return {k: (statistics.median(w for w, _ in v), statistics.median(i for _, i in v))
            for k, v in runs.items()}


def device_run(folder, port, heap="2M", cmd="time"):
    env = dict(os.environ, MICROPYPATH=f"{folder}/lib")
    out = subprocess.run([find_micropython(), "-X", f"heapsize={heap}", f"{folder}/dev.py",
                          str(folder), "localhost", str(port), cmd],
                         capture_output=True, text=True, env=env, timeout=60)
    return out


def paho_run(folder, port, ca_pem):
    done = threading.Event()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-paho")
    c.tls_set(ca_certs=ca_pem, certfile=f"{folder}/paho.pem", keyfile=f"{folder}/paho.key")
    c.on_publish = lambda *a: done.set()
    c.on_connect = lambda cl, *a: cl.publish("things/bench-paho/telemetry", b'{"seq":1}', qos=1)
    t0 = time.perf_counter()
    c.connect("localhost", port, keepalive=60)
    while not done.is_set():
        c.loop(timeout=0.01)
    elapsed = time.perf_counter() - t0
    c.disconnect()
    c.loop(timeout=0.05)
    return elapsed


def prepare(folder, ca):
    """Device files compiled to .mpy (as on the board) and credentials for both clients."""
    lib = folder / "lib"
    for path, data in firmware.files():
        if path.startswith("/lib/"):
            dest = lib / path[len("/lib/"):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
    (folder / "dev.py").write_text(DEVICE)
    (folder / "bare.py").write_text(BARE)
    (folder / "paho_run.py").write_text(PAHO)
    for name in ("bench-dev", "bench-paho"):
        key = certs.generate_key("ec")
        cert = ca.issue_device(name, key.public_key())
        if name == "bench-dev":
            (folder / "cert.der").write_bytes(certs.cert_to_der(cert))
            (folder / "key.der").write_bytes(certs.key_to_der(key))
        else:
            certs.write_certificate(folder / "paho.pem", cert)
            certs.write_private_key(folder / "paho.key", key)
    (folder / "ca.der").write_bytes(certs.cert_to_der(ca.certificate))


def smallest(ok, lo, hi, step=1):
    """Smallest n in [lo, hi] (multiples of step, KiB) with ok(n) true, assuming monotony."""
    if not ok(hi):
        return None
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def bench_connect(folder, cloud, ca):
    tap = WireTap("127.0.0.1", cloud.port).start()
    dev, pah, dev_bytes, paho_bytes = [], [], None, None
    try:
        for _ in range(RUNS):
            n = len(tap.sessions)
            out = device_run(folder, tap.port)
            if "US" not in out.stdout:
                raise SystemExit(f"device run failed:\n{out.stdout}\n{out.stderr}")
            dev.append(int(out.stdout.split("US", 1)[1].split()[0]) / 1e6)
            time.sleep(0.2)
            s = tap.sessions[n]
            dev_bytes = (s.bytes_up, s.bytes_down, s.suite)
            n = len(tap.sessions)
            pah.append(paho_run(folder, tap.port, str(ca.ca_pem)))
            time.sleep(0.2)
            s = tap.sessions[n]
            paho_bytes = (s.bytes_up, s.bytes_down, s.suite)
    finally:
        tap.stop()
    return dev, pah, dev_bytes, paho_bytes


def bench_heap_link(folder, cloud):
    def ok(kib):
        out = device_run(folder, cloud.port, heap=f"{kib}K", cmd="roundtrip")
        return "ROUNDTRIP 1" in out.stdout
    return smallest(ok, 16, 256, 1)


def bench_heap_agent(tmp, cloud, ca):
    """Smallest emulated-board heap where the whole agent answers a ping (4 KiB steps)."""
    thing = "bench-heap"
    key = certs.generate_key("ec")
    cert = ca.issue_device(thing, key.public_key())

    def ok(kib):
        board = EmulatedBoard(Path(tmp) / f"heap{kib}", heapsize=f"{kib}K")
        board.start()
        sub = None
        try:
            cfg = prov.make_config(thing, f"localhost:{cloud.port}", "fs",
                                   {"telemetry_interval_s": 2}, wifi=("bench", ""))
            prov.provision(board.port, cfg, cert, key, [ca.certificate], log=lambda m: None)
            sub = Subscription(cloud, f"things/{thing}/replies")
            board.wait_for_line("upcert: connected", timeout_s=20)
            sub.client.publish(f"things/{thing}/commands", b'{"cmd":"ping","id":"h"}', qos=1)
            sub.wait_for(timeout_s=10)
            return True
        except Exception:
            return False
        finally:
            if sub:
                sub.close()
            board.stop()
    return smallest(ok, 16, 256, 4)


def bench_provision(tmp, cloud, ca):
    times = []
    for i in range(3):
        board = EmulatedBoard(Path(tmp) / f"prov{i}")
        board.start()
        try:
            thing = f"bench-prov-{i}"
            key = certs.generate_key("ec")
            cert = ca.issue_device(thing, key.public_key())
            cfg = prov.make_config(thing, f"localhost:{cloud.port}", "fs", wifi=("bench", ""))
            t0 = time.perf_counter()
            prov.provision(board.port, cfg, cert, key, [ca.certificate], log=lambda m: None)
            times.append(time.perf_counter() - t0)
        finally:
            board.stop()
    return times


def main():
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "dev"
        folder.mkdir()
        ca = LocalCa.init(Path(tmp) / "ca")
        prepare(folder, ca)
        with Cloud(Path(tmp) / "cloud", ca) as cloud:
            cloud.up()
            dev, pah, db, pb = bench_connect(folder, cloud, ca)
            md, mp = statistics.median(dev), statistics.median(pah)
            procs = bench_processes(folder, cloud.port, str(ca.ca_pem))
            link = bench_heap_link(folder, cloud)
            agent = bench_heap_agent(tmp, cloud, ca)
            prov_s = bench_provision(tmp, cloud, ca)
    res = {
        "runs": RUNS,
        "connect_publish_s": {"agent_median": round(md, 4), "paho_median": round(mp, 4),
                              "ratio_agent_over_paho": round(md / mp, 2)},
        "whole_process_s": {
            k: {"wall_median": round(w, 4), "in_process_median": round(i, 4)}
            for k, (w, i) in procs.items()},
        "whole_process_ratio_agent_over_paho": round(procs["agent"][0] / procs["paho"][0], 2),
        "whole_process_ratio_bare_umqtt_over_paho": round(
            procs["bare_umqtt"][0] / procs["paho"][0], 2),
        "wire_bytes": {"agent": {"up": db[0], "down": db[1], "suite": db[2]},
                       "paho": {"up": pb[0], "down": pb[1], "suite": pb[2]}},
        "min_heap_kib": {"link_layer_roundtrip": link, "emulated_board_agent_ping": agent},
        "provision_s": [round(t, 2) for t in prov_s],
        "device_package_mpy_bytes": firmware.package_size(),
    }
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
