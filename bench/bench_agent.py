"""Benchmarks of the foundation (issue #2); figures go into the README.

1. Connect + first QoS1 publish acknowledged: the device stack (tlsconn + mqtt, which frames
   MQTT itself: umqtt.simple is not loaded) on the unix port vs a CPython paho-mqtt client with
   the same certificate, same broker, alternating runs; median of each and the ratio. Timed
   inside each process, from TCP connect to PUBACK (interpreter start-up excluded), through the
   same wire tap.
2. Bytes on the wire for that exchange, both directions, from the wire tap.
3. Heap, each as min / median / max of --heap-runs bisections (1 KiB steps; 4 KiB for the
   board): the smallest GC heap (`micropython -X heapsize`) with which the link layer does
   connect + QoS1 publish (PUBACK), and connect + publish + a command round trip; with which a
   bare `tls` handshake (no upcert module) completes; and the smallest emulated-board heap with
   which the whole agent (config, store, x509, clock, agent) gets a ping answered. Plus the GC
   heap that one open TLS connection holds (tlsconn; gc.collect() then gc.mem_alloc(), open
   minus before). mbedTLS's own memory is not in it: the unix port's standard build allocates
   it with libc calloc (extmod/mbedtls/mbedtls_config_common.h maps it to m_tracked_calloc, the
   GC heap, only under MICROPY_MBEDTLS_CONFIG_BARE_METAL: bare-metal ports, the coverage
   build), an ESP32 from the ESP-IDF heap; so this is the Python objects around it.
4. Provisioning one fresh emulated board end to end (firmware, credentials, read-back, test load).

Any MicroPython unix port runs the device side (--micropython PATH or $UPCERT_MICROPYTHON, e.g. a
32-bit build; default the .venv's). --heap-only: section 3 alone.
Run: .venv/bin/python bench/bench_agent.py [--micropython PATH] [--heap-only] [--heap-runs 3]
     [--json]; UPCERT_BENCH_RUNS (default 10): the timed runs of sections 1-2.
"""

import argparse
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
sys.path[:0] = [str(ROOT), str(ROOT / "host_tools")]

import paho.mqtt.client as paho  # noqa: E402
from upcert.board import firmware  # noqa: E402
from upcert.board import provision as prov  # noqa: E402
from upcert.cloud.standin import Cloud, Subscription  # noqa: E402
from upcert.cloud.wiretap import WireTap  # noqa: E402
from upcert.emu.board import EmulatedBoard  # noqa: E402
from upcert.pki import certs  # noqa: E402
from upcert.pki.ca import LocalCa  # noqa: E402

from bench import interp  # noqa: E402
from tests.tools import micropython_cmd  # noqa: E402

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


# Bare umqtt.simple 1.3.4 with the tls module (the baseline):
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
c = MQTTClient("bench-dev", host, port, ssl=True)  # its certificate's thing: the broker checks
c.connect()
c.publish(b"things/bench-dev/telemetry", b'{"seq":1}', qos=1)
print("US", time.ticks_diff(time.ticks_us(), t0))
c.disconnect()
"""

# The GC heap one open TLS connection holds, through the device's tlsconn: live heap (after
# gc.collect) with the modules loaded, after a plain TCP socket (opened, then closed), with the
# context (client cert, key and CA parsed by mbedTLS), with the connection open (handshake
# done), after closing it.
TLS_HEAP = r"""
import gc, sys, socket
from upcert import tlsconn
d, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rd(n):
    with open(d + "/" + n, "rb") as f:
        return f.read()
cert, key, ca = rd("cert.der"), rd("key.der"), rd("ca.der")
def live():
    gc.collect()
    gc.collect()
    return gc.mem_alloc()
a = [live()]
ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
s = socket.socket(ai[0], socket.SOCK_STREAM)
s.connect(ai[-1])
a.append(live())
s.close()
s = None
a.append(live())
ctx = tlsconn.make_context(cert, key, [ca])
a.append(live())
sock = tlsconn.Connector(ctx).connect(host, port)
a.append(live())
sock.close()
sock = None
a.append(live())
print("TLSHEAP", *a)
"""

# A bare TLS handshake: the tls module alone (no upcert module), same credentials.
HANDSHAKE = r"""
import sys, socket, tls
d, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rd(n):
    with open(d + "/" + n, "rb") as f:
        return f.read()
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(rd("ca.der"))
ctx.load_cert_chain(rd("cert.der"), rd("key.der"))
ctx.verify_mode = tls.CERT_REQUIRED
ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
s = socket.socket(ai[0], socket.SOCK_STREAM)
s.connect(ai[-1])
t = ctx.wrap_socket(s, server_hostname=host)
t.close()
print("HANDSHAKE OK")
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
            micropython_cmd() + [f"{folder}/dev.py", str(folder), "localhost", str(port), "time"],
            env))
        runs["bare_umqtt"].append(whole_process(
            micropython_cmd() + [f"{folder}/bare.py", str(folder), "localhost", str(port)], env))
        runs["paho"].append(whole_process(
            [sys.executable, f"{folder}/paho_run.py", str(folder), str(port), ca_pem]))
    return {k: (statistics.median(w for w, _ in v), statistics.median(i for _, i in v))
            for k, v in runs.items()}


def device_run(folder, port, heap="2M", cmd="time", script="dev.py"):
    env = dict(os.environ, MICROPYPATH=f"{folder}/lib")
    try:
        return subprocess.run(micropython_cmd(heap) + [f"{folder}/{script}", str(folder),
                                                       "localhost", str(port), cmd],
                              capture_output=True, text=True, env=env, timeout=60)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, -1, e.stdout or "", "timeout")


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
    # umqtt.simple for the baseline only (boards do not get it): fetched by `make setup`.
    (lib / "umqtt").mkdir(exist_ok=True)
    for f in ("__init__.py", "simple.py"):
        (lib / "umqtt" / f).write_bytes((ROOT / ".build" / "deps" / "umqtt" / f).read_bytes())
    (folder / "dev.py").write_text(DEVICE)
    (folder / "bare.py").write_text(BARE)
    (folder / "tls_heap.py").write_text(TLS_HEAP)
    (folder / "handshake.py").write_text(HANDSHAKE)
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


def bench_heap_link(folder, cloud, cmd="roundtrip"):
    """Smallest heap (KiB, 1 KiB steps) for connect + QoS1 publish (cmd "time") or connect +
    publish + command round trip ("roundtrip"), device modules as .mpy."""
    def ok(kib):
        out = device_run(folder, cloud.port, heap=f"{kib}K", cmd=cmd)
        if cmd == "roundtrip":
            return "ROUNDTRIP 1" in out.stdout
        return out.returncode == 0 and "US" in out.stdout
    return interp.smallest(ok, 8, 256, 1)


def bench_heap_handshake(folder, cloud):
    """Smallest heap (KiB, 1 KiB steps) for a bare TLS handshake (tls module only)."""
    def ok(kib):
        out = device_run(folder, cloud.port, heap=f"{kib}K", script="handshake.py")
        return "HANDSHAKE OK" in out.stdout
    return interp.smallest(ok, 4, 256, 1)


TLS_STEPS = ("modules", "tcp_open", "tcp_closed", "context", "tls_open", "tls_closed")


def bench_tls_heap(folder, cloud):
    """Live heap (bytes) at each step of TLS_HEAP and the differences that matter."""
    out = device_run(folder, cloud.port, script="tls_heap.py")
    if "TLSHEAP" not in out.stdout:
        raise SystemExit(f"TLS heap run failed:\n{out.stdout}\n{out.stderr}")
    figures = out.stdout.split("TLSHEAP", 1)[1].splitlines()[0].split()
    a = dict(zip(TLS_STEPS, map(int, figures), strict=True))
    return {"live": a, "tcp_socket": a["tcp_open"] - a["modules"],
            "context": a["context"] - a["tcp_closed"],
            "connection": a["tls_open"] - a["context"],
            "context_and_connection": a["tls_open"] - a["tcp_closed"],
            "left_after_close": a["tls_closed"] - a["context"]}


def path_shim(exe, folder):
    """The emulated board runs the `micropython` it finds on PATH (upcert.emu.board): put exe
    there first, for this process and its children."""
    shim = Path(folder) / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "micropython").symlink_to(exe)
    os.environ["PATH"] = f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"


def bench_heap_agent(tmp, cloud, ca, run=0):
    """Smallest emulated-board heap where the whole agent answers a ping (4 KiB steps)."""
    thing = f"bench-heap-{run}"
    key = certs.generate_key("ec")
    cert = ca.issue_device(thing, key.public_key())

    def ok(kib):
        board = EmulatedBoard(Path(tmp) / f"heap{run}-{kib}", heapsize=f"{kib}K")
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
    return interp.smallest(ok, 16, 256, 4)


def bench_heaps(tmp, folder, cloud, ca, runs, board=True):
    """Every heap figure, each as interp.spread over runs (bisections in a row)."""
    found = {"link_layer_publish": [], "link_layer_roundtrip": [], "tls_handshake_only": [],
             "emulated_board_agent_ping": []}
    if not board:
        del found["emulated_board_agent_ping"]
    tls = []
    for r in range(runs):
        for name in found:
            t0 = time.monotonic()
            if name == "emulated_board_agent_ping":
                kib = bench_heap_agent(tmp, cloud, ca, r)
            elif name == "tls_handshake_only":
                kib = bench_heap_handshake(folder, cloud)
            else:
                kib = bench_heap_link(folder, cloud, "time" if name.endswith("publish") else
                                      "roundtrip")
            found[name].append(kib)
            print(f"  heap run {r + 1}/{runs}: {name} {kib}K ({time.monotonic() - t0:.0f} s)",
                  flush=True)
        tls.append(bench_tls_heap(folder, cloud))
    res = {k: interp.spread(v) for k, v in found.items()}
    res["tls_connection_bytes"] = interp.spread([t["connection"] for t in tls])
    res["tls_context_bytes"] = interp.spread([t["context"] for t in tls])
    res["tls_left_after_close_bytes"] = interp.spread([t["left_after_close"] for t in tls])
    res["tcp_socket_bytes"] = interp.spread([t["tcp_socket"] for t in tls])
    res["tls_heap_steps"] = tls
    return res


def print_heaps(mp, heaps, runs):
    print(f"heap figures, micropython {interp.label(mp)}, min / median / max of {runs} runs:")
    for name, what, unit in (
            ("link_layer_publish", "smallest heap, link layer connect + QoS1 publish", "K"),
            ("link_layer_roundtrip", "smallest heap, link layer connect + publish + round trip",
             "K"),
            ("tls_handshake_only", "smallest heap, bare tls handshake (no upcert module)", "K"),
            ("emulated_board_agent_ping", "smallest emulated-board heap, agent answers a ping",
             "K"),
            ("tls_connection_bytes", "GC heap held by one open TLS connection (tlsconn)", " B"),
            ("tls_context_bytes", "GC heap held by the TLS context (cert, key, CA)", " B"),
            ("tcp_socket_bytes", "GC heap held by a plain TCP socket", " B")):
        if name in heaps:
            print(f"  {what}: {interp.show(heaps[name], unit)}")
    if mp["bits"] != 64 and "emulated_board_agent_ping" in heaps:
        print("  (the emulated board adds to its heapsize a reserve for its stand-ins sized on "
              "the 64-bit port: with this binary its figure is too low)")


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    interp.add_option(ap)
    ap.add_argument("--heap-only", action="store_true",
                    help="only the heap figures (section 3)")
    ap.add_argument("--heap-runs", type=int, default=3,
                    help="bisections per heap figure (default 3)")
    ap.add_argument("--no-board", action="store_true",
                    help="leave out the emulated-board heap (the slowest figure)")
    ap.add_argument("--json", action="store_true",
                    help="end with the JSON object on one line (default: indented)")
    a = ap.parse_args(argv)
    if a.heap_runs < 1:
        ap.error("--heap-runs must be >= 1")
    exe = interp.select(a.micropython)
    mpi = interp.describe(exe)
    print(f"micropython: {interp.label(mpi)}", flush=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "dev"
        folder.mkdir()
        ca = LocalCa.init(Path(tmp) / "ca")
        prepare(folder, ca)
        interp.check_mpy(exe, folder / "lib")
        path_shim(exe, tmp)
        with Cloud(Path(tmp) / "cloud", ca) as cloud:
            cloud.up()
            if a.heap_only:
                heaps = bench_heaps(tmp, folder, cloud, ca, a.heap_runs, not a.no_board)
            else:
                dev, pah, db, pb = bench_connect(folder, cloud, ca)
                md, mp = statistics.median(dev), statistics.median(pah)
                procs = bench_processes(folder, cloud.port, str(ca.ca_pem))
                heaps = bench_heaps(tmp, folder, cloud, ca, a.heap_runs, not a.no_board)
                prov_s = bench_provision(tmp, cloud, ca)
    seconds = round(time.monotonic() - t0, 1)
    print_heaps(mpi, heaps, a.heap_runs)
    print(f"({seconds} s)")
    if a.heap_only:
        res = {"micropython": mpi, "heap_runs": a.heap_runs, "seconds": seconds,
               "heap": heaps}
        print(json.dumps(res) if a.json else json.dumps(res, indent=2))
        return 0
    res = {
        "micropython": mpi,
        "seconds": seconds,
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
        "heap_runs": a.heap_runs,
        "heap": heaps,
        "provision_s": [round(t, 2) for t in prov_s],
        "device_package_mpy_bytes": firmware.package_size(),
    }
    print(json.dumps(res) if a.json else json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
