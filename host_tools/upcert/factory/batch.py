"""`upcert batch --manifest FILE.csv`: many boards at once, with an inventory and an audit log.

The CSV has a header and one row per board: target (a serial port, or a folder: images are
built there instead), thing, store (fs, nvs, partition; default fs), attributes (k=v;k2=v2:
the thing's attributes in the registry), and, on AWS only (--aws, upcert.factory.batch_aws),
thing_type and thing_group. Boards run in parallel threads (--jobs), each through the same
steps, each step recorded before the next:

    reserve (inventory row, state reserved: the database refuses a thing or chip id taken)
    issue   (key and certificate from the local CA; inventory state issued, registry ACTIVE)
    write   (`upcert provision` through the board's REPL, or `upcert image build`)
    done    (read back by the board's own store code; inventory state done)

Resume: a board done is skipped; a half-done one (issued) is asked which certificate it holds:
the recorded one -> finished (done); another or none -> rolled back (the certificate set
INACTIVE, the row back to reserved) and made again; a board that does not answer is left as it
is (nothing can be told). The audit log (JSON lines) has one line per action. No key or
password reaches the inventory, the audit log or the output. On AWS IoT Core the same steps
run with the certificate from AWS: upcert.factory.batch_aws.
"""

import csv
import hashlib
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from upcert.errors import UpcertError

STORES = ("fs", "nvs", "partition")


@dataclass
class Job:
    target: str
    thing: str
    store: str
    attributes: dict
    line: int
    thing_type: str = ""
    thing_group: str = ""
    step: str = "waiting"
    result: str = ""
    cert_id: str = ""
    detail: str = ""
    started: float = 0.0
    seconds: float = 0.0
    log: list = field(default_factory=list)

    @property
    def images(self):
        return not self.target.startswith("/dev/")


def read_manifest(path):
    """Jobs from the batch CSV; UpcertError naming the line of the first bad row."""
    from upcert import validate as v

    p = Path(path)
    if not p.is_file():
        raise UpcertError(f"batch manifest {p} not found: a CSV with the header "
                          "target,thing,store,attributes")
    jobs, things, targets = [], set(), set()
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"target", "thing"} <= set(reader.fieldnames):
            raise UpcertError(f"{p}: the header must name at least target and thing "
                              "(target,thing,store,attributes)")
        for n, row in enumerate(reader, 2):
            where = f"{p}:{n}"
            target, thing = (row.get("target") or "").strip(), (row.get("thing") or "").strip()
            store = (row.get("store") or "fs").strip() or "fs"
            if not target or not thing:
                raise UpcertError(f"{where}: target and thing are required")
            try:
                v.thing_name(thing, local_ca=True)
            except UpcertError as e:
                raise UpcertError(f"{where}: {e}") from None
            if store not in STORES:
                raise UpcertError(f"{where}: store {store!r}: use one of {', '.join(STORES)}")
            if thing in things or target in targets:
                raise UpcertError(f"{where}: {'thing ' + thing if thing in things else 'target ' + target} "
                                  "appears twice in the manifest")
            things.add(thing)
            targets.add(target)
            attrs = {}
            for part in filter(None, (row.get("attributes") or "").split(";")):
                k, sep, val = part.partition("=")
                if not sep or not k.strip():
                    raise UpcertError(f"{where}: attributes {row.get('attributes')!r}: write "
                                      "them as key=value;key2=value2")
                attrs[k.strip()] = val.strip()
            kind, group = ((row.get(c) or "").strip() for c in ("thing_type", "thing_group"))
            for col, name in (("thing_type", kind), ("thing_group", group)):
                if name:
                    try:
                        v.thing_name(name, local_ca=False)  # AWS's [a-zA-Z0-9:_-]{1,128}
                    except UpcertError:
                        raise UpcertError(f"{where}: {col} {name!r}: 1..128 characters of "
                                          "[a-zA-Z0-9:_-] (AWS IoT names)") from None
            jobs.append(Job(target, thing, store, attrs, n, kind, group))
    if not jobs:
        raise UpcertError(f"{p} lists no boards")
    return jobs


class Audit:
    """JSON lines, one per action, appended and flushed at once (0600)."""

    def __init__(self, path, station):
        from upcert.validate import open_private

        self.path, self.station = Path(path), station
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open_private(self.path, "ab")
        self._lock = threading.Lock()

    def __call__(self, job, action, **info):
        from upcert.factory.inventory import now

        line = {"time": now(), "station": self.station, "thing": job.thing,
                "target": job.target, "action": action, **info}
        with self._lock:
            self._f.write((json.dumps(line, sort_keys=True) + "\n").encode())
            self._f.flush()

    def close(self):
        self._f.close()


def fingerprint(cert):
    """SHA-1 fingerprint of the DER, as `openssl x509 -fingerprint` prints it."""
    from upcert.pki import certs

    return hashlib.sha1(certs.cert_to_der(cert)).hexdigest()  # noqa: S324 (a fingerprint)


def identify(port):
    """(chip id, firmware) of the board on `port`: machine.unique_id() (the eFuse MAC on an
    ESP32) and MicroPython's version and platform."""
    from upcert.board.transport import Board

    with Board(port, timeout_s=10, deadline_s=30, operation="batch") as b:
        out = b.exec("import machine, sys, binascii\n"
                     "print(binascii.hexlify(machine.unique_id()).decode(), "
                     "'MicroPython-%d.%d.%d' % sys.implementation.version[:3], sys.platform)")
    parts = out.split()
    if len(parts) != 3:
        raise UpcertError(f"board on {port} did not say its chip id: {out.strip()[:80]!r}")
    return parts[0], f"{parts[1]}/{parts[2]}"


class Line:
    """One batch run: settings shared by every board, and the work of one board."""

    def __init__(self, inv, audit, *, endpoint, ca_dir, cloud_dir, station, wifi=None,
                 extra=None, days=365, board="esp32_generic"):
        self.inv, self.audit = inv, audit
        self.endpoint, self.ca_dir, self.cloud_dir = endpoint, ca_dir, cloud_dir
        self.station, self.wifi, self.extra, self.days = station, wifi, extra or {}, days
        self.board = board

    def _registry(self):
        from upcert.factory.registry import registry

        return registry(self.cloud_dir)

    def run(self, job):
        job.started = time.monotonic()
        try:
            job.result = self._run(job)
        except Exception as e:  # one board's failure never stops the others
            job.result = "failed"
            job.detail = str(e) if isinstance(e, UpcertError) else f"{type(e).__name__}: {e}"
            self.audit(job, "failed", step=job.step, error=job.detail[:500])
        job.seconds = time.monotonic() - job.started
        job.step = job.result
        return job

    def _run(self, job):
        chip, firmware = (None, "image") if job.images else self._step(
            job, "identify", identify, job.target)
        job.step = "reserve"
        row = self.inv.reserve(job.thing, job.store, job.target, self.station,
                               json.dumps(job.attributes, sort_keys=True), chip)
        if row["state"] == "done":
            job.cert_id, job.detail = row["cert_id"] or "", "done before: not redone"
            self.audit(job, "skipped", cert_id=row["cert_id"])
            return "skipped"
        if chip and row.get("chip_id") not in (None, chip) and row["state"] != "done":
            self.audit(job, "chip-changed", was=row["chip_id"], now=chip)
        if row["state"] == "issued":
            if self._holds(job, row["cert_id"]):
                self._finish(job, row["cert_id"])
                self.inv.done(job.thing, chip, firmware, job.target)
                job.cert_id, job.detail = row["cert_id"], "half-done: finished"
                self.audit(job, "finished", cert_id=row["cert_id"])
                return "finished"
            self._roll_back(job, row["cert_id"])
        return self._make(job, chip, firmware)

    def _step(self, job, name, fn, *args):
        job.step = name
        return fn(*args)

    def _holds(self, job, cert_id):
        """Does the target hold the certificate recorded for it?"""
        job.step = "check"
        if job.images:
            try:
                from upcert.factory.image import read_manifest

                return read_manifest(job.target).get("cert_id") == cert_id
            except UpcertError:
                return False
        return self._held(job) == cert_id

    def _held(self, job):
        """The id (SHA-256 of the DER) of the certificate the board holds, "" for none."""
        from upcert.board.provision import held_certificate

        held = held_certificate(job.target)
        if held is None:  # rolling back a certificate the board may hold would cut it off
            raise UpcertError(f"board on {job.target} does not say which certificate it holds "
                              "(it does not answer, or its store cannot be read): left half-done; "
                              "check the board and run the batch again")
        return held

    def _finish(self, job, cert_id):
        """A half-done board holds its recorded certificate: what is left before `done` (the
        stand-in's registry has it ACTIVE already)."""

    def _roll_back(self, job, cert_id):
        job.step = "roll back"
        reg = self._registry()
        if reg is not None and cert_id and (rec := reg.get(cert_id)) and \
                rec["status"] == "ACTIVE":
            from upcert.cloud.admin import set_certificate_status

            set_certificate_status(self.cloud_dir, cert_id, "INACTIVE")
        self.inv.rolled_back(job.thing)
        self.audit(job, "rolled-back", cert_id=cert_id)

    def _make(self, job, chip, firmware):
        from upcert.board import provision as prov

        job.step = "issue"
        cfg = prov.make_config(job.thing, self.endpoint, job.store, dict(self.extra), self.wifi)
        cert, key, roots = prov.local_credentials(self.ca_dir, job.thing, days=self.days)
        cid = prov.certs.cert_id(cert)
        not_after = cert.not_valid_after_utc.isoformat()
        self.inv.issued(job.thing, cid, fingerprint(cert), not_after)
        job.cert_id = cid
        self.audit(job, "issued", cert_id=cid, not_after=not_after, store=job.store)
        reg = self._registry()
        if job.attributes and reg is not None:
            reg.put_thing(job.thing, job.attributes)
        job.step = "write"
        if job.images:
            from upcert.factory.image import build

            build(job.target, cfg, cert, key, roots, board=self.board)
            if reg is not None and reg.get(cid) is None:
                reg.register(cert, job.thing)
        else:
            prov.provision(job.target, cfg, cert, key, roots, board=self.board,
                           log=lambda m: None, registry=reg)
        del key
        self.audit(job, "written", cert_id=cid)
        job.step = "record"
        self.inv.done(job.thing, chip, firmware, job.target)
        self.audit(job, "done", cert_id=cid, chip_id=chip, firmware=firmware)
        return "done"


def run_batch(jobs, line, jobs_at_once=4, live=True, console=None):
    """Run every job (threads); a live table while it runs; returns the jobs."""
    from rich.console import Console
    from rich.live import Live

    console = console or Console(stderr=True)
    with ThreadPoolExecutor(max(1, jobs_at_once)) as pool:
        futures = [pool.submit(line.run, j) for j in jobs]
        if live and console.is_terminal:
            with Live(progress_table(jobs), console=console, refresh_per_second=4) as view:
                while not all(f.done() for f in futures):
                    time.sleep(0.25)
                    view.update(progress_table(jobs))
                view.update(progress_table(jobs))
        for f in futures:
            f.result()
    return jobs


def progress_table(jobs):
    from rich.table import Table

    t = Table(title="upcert batch", expand=False)
    for col in ("thing", "target", "store", "step", "s"):
        t.add_column(col)
    for j in jobs:
        secs = j.seconds or (time.monotonic() - j.started if j.started else 0)
        style = {"failed": "red", "done": "green", "finished": "green",
                 "skipped": "dim"}.get(j.result, "")
        t.add_row(j.thing, j.target, j.store, j.step, f"{secs:.1f}", style=style)
    return t


def summary_table(jobs):
    from rich.table import Table

    t = Table(title="batch summary")
    for col in ("thing", "target", "store", "result", "certificate", "s", "detail"):
        t.add_column(col, overflow="fold")
    for j in jobs:
        t.add_row(j.thing, j.target, j.store, j.result, j.cert_id[:16], f"{j.seconds:.1f}",
                  j.detail[:200])
    return t


def default_station():
    return os.environ.get("UPCERT_STATION") or socket.gethostname()
