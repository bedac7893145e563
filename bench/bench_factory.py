"""The production line's figures, on emulated boards and this machine:

- seconds per board: provisioning through the REPL (`upcert provision`'s library call, fresh
  board), building its images (`upcert image build`), and booting an emulated board from them
  until its store answers (`use_images` + start + `board status`);
- the lower bound a serial link sets on each: bytes each path writes to the board (REPL: what
  mpremote sends, repr() of every file in raw-paste commands; images: the flash regions
  esptool writes, raw and as esptool sends them, zlib-compressed) at 115200 and 921600 baud
  (10 bits per byte);
- a batch of N boards (`upcert batch` library, --jobs 4): boards per minute;
- inventory inserts per second (reserve + issued + done per board) on SQLite and PostgreSQL.

Run: .venv/bin/python bench/bench_factory.py [--boards 12] [--runs 3]
"""

import argparse
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "host_tools"))


def _creds(ca, thing):
    from upcert.board import provision as prov

    return prov.local_credentials(ca.directory, thing)


def repl_path(tmp, ca, runs):
    """Seconds per REPL provisioning of a fresh emulated board, and the bytes mpremote sends."""
    from upcert.board import firmware
    from upcert.board import provision as prov
    from upcert.emu.board import EmulatedBoard

    secs = []
    for i in range(runs):
        with EmulatedBoard(tmp / f"repl{i}") as b:
            cfg = prov.make_config(f"bench-r{i}", "localhost:8883", "nvs", wifi=("lab", "pw"))
            cert, key, roots = _creds(ca, f"bench-r{i}")
            t = time.monotonic()
            prov.provision(b.port, cfg, cert, key, roots, log=lambda m: None, reset=False)
            secs.append(time.monotonic() - t)
    files = firmware.files(mpy=True)
    sent = sum(len(repr(d)) for _, d in files) + 2000  # + config, roots, credentials
    return secs, sent


def image_path(tmp, ca, runs):
    """Seconds per image build, seconds per boot from the images until the store answers, and
    the bytes esptool writes (raw, compressed)."""
    from upcert.board import provision as prov
    from upcert.board.provision import status
    from upcert.emu.board import EmulatedBoard
    from upcert.emu.config import use_images
    from upcert.factory import image

    build, boot, raw, packed = [], [], 0, 0
    for i in range(runs):
        cfg = prov.make_config(f"bench-i{i}", "localhost:8883", "nvs", wifi=("lab", "pw"))
        cert, key, roots = _creds(ca, f"bench-i{i}")
        t = time.monotonic()
        m = image.build(tmp / f"img{i}", cfg, cert, key, roots)
        build.append(time.monotonic() - t)
        t = time.monotonic()
        use_images(tmp / f"boot{i}", tmp / f"img{i}")
        with EmulatedBoard(tmp / f"boot{i}") as b:
            st = status(b.port)
            assert st["cert_id"] == m["cert_id"], st
            boot.append(time.monotonic() - t)
        raw = sum(f["size"] for f in m["files"])
        packed = sum(len(zlib.compress((tmp / f"img{i}" / f["file"]).read_bytes(), 9))
                     for f in m["files"])
    return build, boot, raw, packed


def batch_rate(tmp, ca, n):
    """Boards per minute for a batch of n emulated boards, 4 at once."""
    from upcert.emu.board import EmulatedBoard
    from upcert.factory import batch
    from upcert.factory.inventory import open_inventory

    boards = [EmulatedBoard(tmp / f"bb{i}") for i in range(n)]
    for b in boards:
        b.start()
    try:
        jobs = [batch.Job(b.port, f"bench-b{i}", "fs", {}, i) for i, b in enumerate(boards)]
        inv = open_inventory(tmp / "inv.sqlite")
        audit = batch.Audit(tmp / "audit.jsonl", "bench")
        line = batch.Line(inv, audit, endpoint="localhost:8883", ca_dir=ca.directory,
                          cloud_dir=tmp / "nocloud", station="bench", wifi=("lab", "pw"))
        t = time.monotonic()
        batch.run_batch(jobs, line, 4, live=False)
        took = time.monotonic() - t
        audit.close()
        bad = [j for j in jobs if j.result != "done"]
        assert not bad, [(j.thing, j.detail) for j in bad]
    finally:
        for b in boards:
            b.stop()
    return took, n / took * 60


def inserts_per_s(where, n=300):
    from upcert.factory.inventory import open_inventory

    inv = open_inventory(where)
    t = time.monotonic()
    for i in range(n):
        thing = f"ins-{i}"
        inv.reserve(thing, "fs", f"/dev/x{i}", "bench", "{}", f"chip{i}")
        inv.issued(thing, f"{i:064x}", f"{i:040x}", "2027-01-01T00:00:00+00:00")
        inv.done(thing, firmware="bench")
    took = time.monotonic() - t
    inv.close()
    return n / took


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--boards", type=int, default=12, help="boards in the batch (default 12)")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args(argv)
    from upcert.pki.ca import LocalCa

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ca = LocalCa.init(tmp / "ca", key_type="ec")
        repl, sent = repl_path(tmp, ca, a.runs)
        build, boot, raw, packed = image_path(tmp, ca, a.runs)
        med = statistics.median
        print(f"REPL provisioning (nvs store, device package as .mpy): {med(repl):.2f} s/board "
              f"(runs {', '.join(f'{s:.2f}' for s in repl)}); mpremote sends ~{sent} bytes")
        print(f"image build: {med(build):.2f} s/board; boot from images until `board status` "
              f"answers: {med(boot):.2f} s/board")
        print(f"images: {raw} bytes raw, {packed} compressed (what esptool sends)")
        for baud in (115200, 921600):
            bps = baud / 10
            print(f"serial bound at {baud} baud: REPL {sent / bps:.1f} s, images "
                  f"{packed / bps:.1f} s compressed ({raw / bps:.1f} s raw)")
        took, rate = batch_rate(tmp, ca, a.boards)
        print(f"batch of {a.boards} emulated boards, 4 at once: {took:.1f} s, "
              f"{rate:.0f} boards/minute")
        print(f"inventory inserts (reserve+issued+done) per second, SQLite: "
              f"{inserts_per_s(tmp / 'ins.sqlite'):.0f}")
        try:
            sys.path.insert(0, str(HERE.parent))
            from tests import pgserver

            with pgserver.server() as url:
                print(f"inventory inserts per second, PostgreSQL (local, fsync off): "
                      f"{inserts_per_s(url):.0f}")
        except (FileNotFoundError, RuntimeError) as e:
            print(f"PostgreSQL: not measured ({e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
