"""`make demo`: a local AWS IoT stand-in, an emulated ESP32 board, provisioning through mpremote,
and the agent talking over TLS 1.2 with its own certificate; a live rotation, a key in an
ATECC608, provisioning by claim; a batch of three boards at once with an inventory, ending with
the fleet's expiry report. Stops everything it started.
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host_tools"))

from upcert.board import provision as prov  # noqa: E402
from upcert.cloud.standin import Cloud, Subscription  # noqa: E402
from upcert.cloud.wiretap import WireTap  # noqa: E402
from upcert.emu.board import EmulatedBoard  # noqa: E402
from upcert.errors import UpcertError  # noqa: E402
from upcert.pki.ca import LocalCa  # noqa: E402

THING = "demo-thing-1"


def step(msg):
    print(f"\n== {msg}", flush=True)


def say(msg):
    print(f"   {msg}", flush=True)


def rotate_live(home, ca, ca_dir, cloud, tap):
    """A second board with a 10-minute certificate renews it live over Fleet Provisioning."""
    import datetime as dt

    from upcert.cloud.registry import Registry
    from upcert.pki import certs

    thing = "demo-thing-2"
    step(f"{thing}: a certificate valid for 10 minutes, renewal due under a day left")
    # The default heap: the ESP32's grown heap in 64-bit terms (boards/unix/README.md).
    board = EmulatedBoard(home / "board2")
    shutil.rmtree(home / "board2", ignore_errors=True)
    port = board.start()
    try:
        key = certs.generate_key("ec")
        now = dt.datetime.now(dt.timezone.utc)
        cert = ca.issue_device(thing, key.public_key(), not_before=now - dt.timedelta(minutes=1),
                               not_after=now + dt.timedelta(minutes=10))
        Registry(cloud.registry_path).register(cert, thing)
        cfg = prov.make_config(thing, f"localhost:{tap.port}", "nvs",
                               {"telemetry_interval_s": 5,
                                "renew": {"days": 1, "fraction": 0.2, "jitter_s": 0}},
                               wifi=("upcert-lab", "demo-password"))
        old = prov.provision(port, cfg, cert, key, [ca.certificate], log=lambda m: None).cert_id
        say(f"old certificate {old[:16]} (nvs store), expires in 10 minutes")
        for pattern in ("upcert: connected", "upcert: rotation: due", "new P-256 key",
                        "CSR for CN=", "issued", "checks passed", "staged", "trial connection",
                        "committed certificate", "upcert: rotation: done"):
            say(board.wait_for_line(pattern, timeout_s=60))
        with Subscription(cloud, f"things/{thing}/telemetry") as tsub:
            body = json.loads(tsub.wait_for(
                lambda m: json.loads(m.payload)["cert_id"] != old, timeout_s=60).payload)
        new = body["cert_id"]
        say(f"telemetry now from certificate {new[:16]} ({body['days_left']} days left)")
        # AWS's advice: deactivate the old certificate once the device works with the new one.
        # The board reports rotation-done once its new identity is proven, and the stand-in
        # sets the old certificate INACTIVE (as for a rotation job reported SUCCEEDED).
        reg = Registry(cloud.registry_path)
        deadline = time.monotonic() + 30
        while reg.get(old)["status"] != "INACTIVE" and time.monotonic() < deadline:
            time.sleep(0.2)
        states = {r["cert_id"][:16]: r["status"] for r in reg.list(thing)
                  if r["cert_id"] in (old, new)}
        say(f"registry: {states} (the old one retired on the board's rotation-done report)")
    finally:
        board.stop()


def chip_demo(home, ca_dir, cloud):
    """A third board with a blank emulated ATECC608: key made in the chip, CSR signed by it."""
    from upcert.board import chip

    thing = "demo-thing-3"
    step(f"{thing}: a blank ATECC608 (emulated, I2C 0x60): the key is made inside the chip")
    shutil.rmtree(home / "board3", ignore_errors=True)
    from upcert.cloud.registry import Registry

    board = EmulatedBoard(home / "board3", atecc608="blank")
    port = board.start()
    try:
        cfg = chip.make_chip_config(thing, f"localhost:{cloud.port}",
                                    wifi=("upcert-lab", "demo-password"))
        res = chip.provision_chip(port, cfg, ca_dir, lock=True, log=say,
                                  registry=Registry(cloud.registry_path))
        say(f"chip {res.serial} rev {res.revision}: config and data zones locked, key in slot "
            f"{res.slot}; the CSR's signature and public key checked on the host")
        say(f"certificate {res.cert_id[:16]} from the local CA, on the flash")
        # The port's tls module takes only key bytes: upcert's own TLS 1.2 client connects, with
        # the CertificateVerify signature and the ECDHE key made inside the chip.
        with Subscription(cloud, f"things/{thing}/#") as sub:
            say(board.wait_for_line("upcert: connected", timeout_s=60).strip())
            say(board.wait_for_line("upcert: published telemetry", timeout_s=60).strip())
            sub.client.publish(f"things/{thing}/commands",
                               json.dumps({"cmd": "ping", "id": "demo-3"}), qos=1)
            reply = sub.wait_for(lambda m: m.topic.endswith("/replies"), timeout_s=30)
            say(f"ping answered: {reply.payload.decode()}")
            mark = board.log_path.stat().st_size
            from upcert.cloud.admin import create_rotation_job

            job = create_rotation_job(cloud.state_dir, thing)
            say(f"job {job}: rotate over Fleet Provisioning, key in a spare chip slot")
            board.wait_for_line("upcert: rotation: done", timeout_s=90, since=mark)
            for line in board.log_path.read_bytes()[mark:].decode("utf-8", "replace").splitlines():
                if "upcert: rotation:" in line or "upcert: connected" in line:
                    say(line.strip())
    finally:
        board.stop()


def claim_demo(home, cloud):
    """A fourth board provisioned by claim: it holds only the batch's claim certificate, and
    gets its own identity at first boot."""
    from upcert.pki import certs

    thing = "demo-thing-4"
    step(f"{thing}: provisioning by claim (one claim certificate for a whole batch)")
    shutil.rmtree(home / "board4", ignore_errors=True)
    board = EmulatedBoard(home / "board4")
    port = board.start()
    try:
        cert_path, key_path = cloud.claim_credentials()
        cfg = prov.make_config(thing, f"localhost:{cloud.port}", "fs",
                               {"telemetry_interval_s": 5, "claim": {"template": "upcert-claim"}},
                               wifi=("upcert-lab", "demo-password"))
        res = prov.provision_claim(port, cfg, certs.load_certificate(cert_path),
                                   certs.load_private_key(key_path), [cloud.ca.certificate],
                                   log=say)
        say(f"claim certificate {res.cert_id[:16]} written (no identity yet); board reset")
        with Subscription(cloud, f"things/{thing}/#") as sub:
            board.wait_for_line("upcert: published telemetry", timeout_s=90)
            for line in board.log_text().splitlines():
                if "upcert: claim:" in line or "upcert: connected" in line:
                    say(line.strip())
            msg = sub.wait_for(lambda m: m.topic.endswith("/telemetry"), timeout_s=30)
            say(f"{msg.topic}: cert_id {json.loads(msg.payload)['cert_id'][:16]}")
    finally:
        board.stop()


def batch_demo(home, ca_dir, cloud):
    """Three boards at once through `upcert batch`'s library (fs, nvs, partition stores), an
    SQLite inventory and an audit log, then the fleet's expiry report: the demo ends with it."""
    from rich.console import Console
    from upcert.emu import config as emu_config
    from upcert.factory import batch, fleet
    from upcert.factory.inventory import open_inventory
    from upcert.factory.registry import fleet_registry

    step("a production batch: three boards at once, an inventory, an audit log")
    for name in ("inventory.sqlite", "inventory.sqlite-wal", "inventory.sqlite-shm",
                 "audit.jsonl", "batch.csv", "fleet.png"):
        (home / name).unlink(missing_ok=True)
    stores = ("fs", "nvs", "partition")
    boards = []
    try:
        for i, store in enumerate(stores, 5):
            state = home / f"board{i}"
            shutil.rmtree(state, ignore_errors=True)
            if store == "partition":  # the table with the upcert data partition
                emu_config.use_table(state, ROOT / "boards" / "esp32_generic" / "partitions.csv")
            boards.append(EmulatedBoard(state))
            boards[-1].start()
        manifest = home / "batch.csv"
        manifest.write_text("target,thing,store,attributes\n" + "".join(
            f"{b.port},demo-thing-{i},{s},line=demo;slot={i}\n"
            for i, (b, s) in enumerate(zip(boards, stores, strict=True), 5)))
        say(f"manifest {manifest}: " + ", ".join(
            f"demo-thing-{i} ({s}) on {b.port}" for i, (b, s) in enumerate(
                zip(boards, stores, strict=True), 5)))
        inv = open_inventory(home / "inventory.sqlite")
        audit = batch.Audit(home / "audit.jsonl", "demo-station")
        line = batch.Line(inv, audit, endpoint=f"localhost:{cloud.port}", ca_dir=ca_dir,
                          cloud_dir=cloud.state_dir, station="demo-station",
                          wifi=("upcert-lab", "demo-password"),
                          extra={"telemetry_interval_s": 5})
        t0 = time.monotonic()
        try:
            jobs = batch.run_batch(batch.read_manifest(manifest), line, jobs_at_once=3,
                                   live=False)
        finally:
            audit.close()
        console = Console(width=120)
        console.print(batch.summary_table(jobs))
        say(f"{sum(j.result == 'done' for j in jobs)} of {len(jobs)} boards done in "
            f"{time.monotonic() - t0:.1f} s; inventory {inv.where}; audit log "
            f"{home / 'audit.jsonl'} ({len((home / 'audit.jsonl').read_text().splitlines())} "
            "lines)")
        failed = [j for j in jobs if j.result != "done"]
        if failed:
            raise UpcertError(f"batch: {failed[0].thing}: {failed[0].detail}")
        for b in boards:
            say(b.wait_for_line("upcert: connected", timeout_s=60).strip())

        step("the fleet report: inventory + the stand-in's registry (`upcert fleet report`)")
        rep = fleet.report(inv, fleet_registry(cloud.state_dir), days=30)
        fleet.print_report(rep, console)
        say("(demo-thing-2..4 were provisioned one by one above, not by the batch: the inventory "
            "does not know their boards, so their ACTIVE certificates show as on no board; an "
            "ACTIVE certificate no board holds, as a rotated-away one still ACTIVE, is a "
            "leftover to retire)")
        png = home / "fleet.png"
        fleet.timeline_png(rep, png)
        say(f"expiry timeline: {png}")
    finally:
        for b in boards:
            b.stop()


def main():
    home = Path(os.environ.get("UPCERT_HOME", ROOT / ".state")) / "demo"
    started = time.monotonic()
    shutil.rmtree(home / "board1", ignore_errors=True)  # a factory-fresh board every time
    cloud = board = tap = None
    try:
        step("local CA (RSA-2048, like Amazon Root CA 1) and broker certificate")
        ca_dir = home / "ca"
        ca = LocalCa.load(ca_dir) if (ca_dir / "ca.pem").exists() else LocalCa.init(ca_dir)
        say(f"CA: {ca.certificate.subject.rfc4514_string()} in {ca_dir}")

        step("local AWS IoT stand-in: mosquitto, TLS 1.2 only, AWS cipher suites, client certs")
        cloud = Cloud(home / "cloud", ca)
        cloud.up()
        say(f"broker on {cloud.endpoint}:{cloud.port}; per-thing ACL things/<CN>/#")
        tap = WireTap("127.0.0.1", cloud.port).start()
        say(f"wire tap on 127.0.0.1:{tap.port} -> broker (reads the TLS hellos, counts bytes)")

        step("emulated ESP32 board (MicroPython unix port, littlefs flash, pty serial)")
        board = EmulatedBoard(home / "board1")
        port = board.start()
        say(f"serial device {port}")

        step(f"provision {THING} through mpremote: key + certificate from the local CA, fs store")
        cfg = prov.make_config(THING, f"localhost:{tap.port}", "fs",
                               {"telemetry_interval_s": 5},
                               wifi=("upcert-lab", "demo-password"))
        cert, key, roots = prov.local_credentials(ca_dir, THING, days=30)
        res = prov.provision(port, cfg, cert, key, roots, log=say)
        say(f"checked, written, read back (sha256), loaded into tls.SSLContext in {res.seconds:.1f} s")
        say(f"certificate id {res.cert_id}")
        say(f"expires {res.not_after:%Y-%m-%d %H:%M} UTC; issuer {res.issuer_check}")
        say("board reset: boot.py, main.py, agent starts")

        step("agent connects")
        sub = Subscription(cloud, f"things/{THING}/#")
        line = board.wait_for_line("upcert: connected", timeout_s=60)
        say(line)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (tap.sessions and tap.sessions[-1].suite):
            time.sleep(0.1)
        if tap.sessions and tap.sessions[-1].suite:
            s = tap.sessions[-1]
            say(f"on the wire: SNI {s.sni!r}, {len(s.offered)} suites offered, "
                f"server chose {s.version} {s.suite}")

        step("telemetry reaches a host subscriber (admin identity)")
        msg = sub.wait_for(lambda m: m.topic.endswith("/telemetry"), timeout_s=30)
        say(f"{msg.topic}: {msg.payload.decode()}")

        step("host sends a ping command; the board answers")
        cmd = {"cmd": "ping", "id": "demo-1"}
        cloud_client = sub.client
        cloud_client.publish(f"things/{THING}/commands", json.dumps(cmd), qos=1)
        say(f"things/{THING}/commands <- {json.dumps(cmd)}")
        reply = sub.wait_for(lambda m: m.topic.endswith("/replies"), timeout_s=30)
        say(f"{reply.topic}: {reply.payload.decode()}")
        say(board.wait_for_line("upcert: command ping", timeout_s=10))
        sub.close()

        rotate_live(home, ca, ca_dir, cloud, tap)
        chip_demo(home, ca_dir, cloud)
        claim_demo(home, cloud)
        batch_demo(home, ca_dir, cloud)
        step(f"done in {time.monotonic() - started:.1f} s")
        return 0
    except (UpcertError, TimeoutError) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        if board is not None:
            tail = "\n".join(board.log_text().splitlines()[-25:])
            print(f"--- board serial log (tail) ---\n{tail}", file=sys.stderr)
        return 1
    finally:
        if board is not None:
            board.stop()
        if tap is not None:
            tap.stop()
        if cloud is not None:
            cloud.down()
        print("stopped the board, the wire tap and the broker")


if __name__ == "__main__":
    sys.exit(main())
