"""Seconds from a blank emulated board to its first telemetry, per provisioning path:
(a) the local CA (`upcert provision`: key and certificate made on the host),
(c) provisioning by claim on the stand-in (`upcert provision --claim`: the claim written, then
the board's first boot makes its key, claims its certificate over Fleet Provisioning, proves it
and starts the agent; its connections are paced 1.1 s apart for AWS's 1 CONNECT/s per client id,
so about 2.2 s of it is waiting), and
(b) `upcert provision --aws` against moto (tests/aws_fakes.py: in-process AWS; its
CreateCertificateFromCsr answered for the CSR's key, signed by the local CA) with the key and CSR
made on the board; the MQTT part is the local stand-in in both, so (b) - (a) is what the AWS path
adds: the key and CSR on the board (MicroPython P-256), the AWS calls (thing, certificate, policy,
activation; moto in-process, so no network latency: on AWS add a few round trips of ~50-200 ms
each) and one more host call.
Timed: from `provision` being called on a board that has booted with an empty flash (no firmware,
no identity) to the first telemetry message the host's subscriber receives; `aws setup` runs once
before, untimed. Runs alternate between the paths; median and range.
Run: .venv/bin/python bench/bench_provision_aws.py [--runs 5] [--json]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "host_tools")]

import pytest  # noqa: E402  (MonkeyPatch, for moto_account's environment)
from upcert import cli  # noqa: E402
from upcert.cloud.standin import Cloud, Subscription  # noqa: E402
from upcert.emu.board import EmulatedBoard  # noqa: E402
from upcert.pki.ca import LocalCa  # noqa: E402

from tests.aws_fakes import honour_csr, moto_account  # noqa: E402

NET = ["--wifi-ssid", "upcert-lab", "--telemetry-interval", "2"]


def _timed(cloud, board, thing, argv):
    with Subscription(cloud, f"things/{thing}/telemetry") as sub:
        t0 = time.monotonic()
        if cli.main(argv) != 0:
            raise SystemExit(f"provision failed: {' '.join(argv)}")
        sub.wait_for(timeout_s=60)
        return time.monotonic() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    got = {"local CA": [], "--aws (moto)": [], "--claim": []}
    mp = pytest.MonkeyPatch()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mp.setenv("UPCERT_WIFI_PASSWORD", "bench")
        ca = LocalCa.init(tmp / "ca")
        with Cloud(tmp / "cloud", ca) as cloud, moto_account(mp, tmp / "home") as account:
            import io
            from contextlib import redirect_stderr, redirect_stdout

            quiet = io.StringIO()
            with redirect_stdout(quiet), redirect_stderr(quiet):
                assert cli.main(["aws", "setup", "--create-role"]) == 0
            honour_csr(account, ca)
            path = tmp / "home" / "aws" / "eu-west-1" / "aws.json"
            s = json.loads(path.read_text())
            s.update(endpoint="localhost", port=cloud.port, roots=str(ca.ca_pem))
            path.write_text(json.dumps(s))
            for run in range(a.runs):
                for name in got:
                    thing = f"bench-{run}-{name.strip('-').split()[0].replace(' ', '')}"
                    board = EmulatedBoard(tmp / "boards" / thing)
                    board.start()
                    try:
                        base = ["provision", "--thing", thing, "--port", board.port, *NET]
                        extra = (["--aws"] if "aws" in name else
                                 ["--claim", "--endpoint", f"localhost:{cloud.port}",
                                  "--cloud-dir", str(cloud.state_dir)] if "claim" in name else
                                 ["--endpoint", f"localhost:{cloud.port}", "--ca-dir",
                                  str(ca.directory), "--cloud-dir", str(tmp / "no-cloud")])
                        with redirect_stdout(quiet), redirect_stderr(quiet):
                            got[name].append(_timed(cloud, board, thing, base + extra))
                    finally:
                        board.stop()
                    print(f"run {run + 1} {name}: {got[name][-1]:.2f} s", flush=True)
    mp.undo()
    summary = {k: {"median_s": round(statistics.median(v), 2), "min_s": round(min(v), 2),
                   "max_s": round(max(v), 2), "runs": len(v)} for k, v in got.items()}
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        for k, v in summary.items():
            print(f"{k:<14} blank board -> first telemetry: {v['median_s']:.2f} s "
                  f"({v['min_s']:.2f}-{v['max_s']:.2f}, {v['runs']} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
