"""Run a soak: a local CA and stand-in (short-lived certificates, a persistent host subscriber),
N emulated boards each behind its own wire relay (upcert.emu.wire), a fault injector at random
times from a seed, then a drain period and the report (upcert.soak.report).

Every board's serial log is read as it grows and each line timestamped on the host, so that
recoveries can be timed without a clock on the board."""

import datetime as dt
import json
import random
import threading
import time
from pathlib import Path

from upcert.errors import UpcertError
from upcert.soak import KINDS

SUBSCRIBER_ID = "upcert-soak-subscriber"


class SoakError(UpcertError):
    """A soak cannot be set up or run."""


def parse_kinds(text):
    """The fault kinds of a --faults value ("all", or names separated by commas)."""
    if text in (None, "", "all"):
        return list(KINDS)
    kinds = [k.strip() for k in str(text).split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise SoakError(f"--faults {text!r}: unknown kind(s) {', '.join(bad) or '(none)'}; use "
                        f"'all' or some of {','.join(KINDS)}")
    return list(dict.fromkeys(kinds))


class LogWatch(threading.Thread):
    """Reads each board's serial.log as it grows: lines[name] = [(host time, line), ...]."""

    def __init__(self, boards, period_s=0.2):
        super().__init__(daemon=True, name="soak-logs")
        self.boards = boards  # {name: EmulatedBoard}
        self.lines = {n: [] for n in boards}
        self._pos = {n: 0 for n in boards}
        self._rest = {n: b"" for n in boards}
        self.period_s = period_s
        self._halt = threading.Event()
        self.lock = threading.Lock()

    def poll(self):
        now = time.time()
        for name, b in self.boards.items():
            try:
                with open(b.log_path, "rb") as f:
                    f.seek(self._pos[name])
                    data = f.read()
            except FileNotFoundError:
                continue
            self._pos[name] += len(data)
            data = self._rest[name] + data
            *full, self._rest[name] = data.split(b"\n")
            with self.lock:
                self.lines[name] += [(now, ln.decode("utf-8", "replace").rstrip("\r"))
                                     for ln in full]

    def run(self):
        while not self._halt.wait(self.period_s):
            self.poll()

    def stop(self):
        self._halt.set()
        self.join(5)
        self.poll()

    def since(self, name, t, text):
        """Host time of the first line of board `name` at or after t containing text."""
        with self.lock:
            for when, line in self.lines[name]:
                if when >= t and text in line:
                    return when
        return None


class Subscriber:
    """The host's telemetry consumer: a persistent MQTT session (clean_session False, the broker
    keeps it across restarts with its persistence on), so a message acknowledged to a board while
    the subscriber reconnects still reaches it. received: [(host time, topic, payload)]."""

    def __init__(self, cloud, topic="things/+/telemetry"):
        import paho.mqtt.client as mqtt

        self.received = []
        self.topic = topic
        self.lock = threading.Lock()
        self.connected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=SUBSCRIBER_ID,
                        clean_session=False, protocol=mqtt.MQTTv311)
        c.tls_set_context(cloud.tls_context(cloud.ca.admin_pem, cloud.ca.admin_key))
        c.reconnect_delay_set(1, 2)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_message = self._on_message
        self.client = c
        c.connect(cloud.endpoint, cloud.port, keepalive=30)
        c.loop_start()
        if not self.connected.wait(10):
            self.close()
            raise SoakError(f"the soak's subscriber could not connect to {cloud.endpoint}:"
                            f"{cloud.port}")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(self.topic, 1)
            self.connected.set()

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.received.append((time.time(), message.topic, bytes(message.payload)))

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


class Soak:
    """One soak run. settings: boards, minutes, kinds, rate (faults per minute), seed, out
    (folder), interval_s (telemetry), queue, cert_minutes (lifetime of every certificate:
    expiry rotations happen at half of it when "expiry" is among the kinds), drain_s."""

    def __init__(self, out, boards=2, minutes=2.0, kinds=None, rate=None, seed=None,
                 interval_s=2, queue=8, cert_minutes=3, drain_s=150, log=print):
        if not isinstance(boards, int) or not 1 <= boards <= 32:
            raise SoakError(f"--boards {boards!r}: give 1..32")
        if not 0.5 <= float(minutes) <= 24 * 60:
            raise SoakError(f"--minutes {minutes!r}: give 0.5 .. 1440")
        self.out = Path(out).resolve()
        self.n, self.minutes = boards, float(minutes)
        self.kinds = list(kinds or KINDS)
        self.rate = float(rate) if rate else max(2.0, len(self.kinds) / (self.minutes * 0.75))
        if not 0.1 <= self.rate <= 120:
            raise SoakError(f"--rate {rate!r}: give 0.1 .. 120 faults per minute")
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.rng = random.Random(self.seed)
        self.interval_s, self.queue, self.cert_minutes = interval_s, queue, cert_minutes
        self.drain_s = drain_s
        self.log = log
        self.boards, self.wires, self.things = {}, {}, {}
        self.events = []  # {"kind", "boards", "start", "end", "detail"}
        self.cloud = self.sub = self.watch = None
        self.started = self.window_end = self.ended = None
        self.initial = {}  # thing -> certificate id provisioned

    # -- set-up -----------------------------------------------------------------------------

    def setup(self):
        from upcert.cloud.registry import Registry
        from upcert.cloud.standin import Cloud
        from upcert.emu.board import EmulatedBoard
        from upcert.emu.wire import Wire
        from upcert.pki.ca import LocalCa
        from upcert.procs import free_port

        self.out.mkdir(parents=True, exist_ok=True)
        self.out.chmod(0o700)
        ca = LocalCa.init(self.out / "ca", key_type="ec", force=True)
        short = "expiry" in self.kinds
        validity = f"{self.cert_minutes}m" if short else "365d"
        # mosquitto keeps sessions across restarts (the soak's subscriber is one): persistence
        # on, saved at each restart's SIGTERM.
        db = self.out / "cloud" / "db"
        db.mkdir(parents=True, exist_ok=True)
        # A port of our choosing: restarts come back on it (the wires dial it).
        self.cloud = Cloud(self.out / "cloud", ca, port=free_port("127.0.0.1"),
                           cert_validity=validity,
                           extra_conf=f"persistence true\npersistence_location {db}/\n")
        self.cloud.up()
        self.registry = Registry(self.cloud.registry_path)
        self.sub = Subscriber(self.cloud)
        for i in range(1, self.n + 1):
            name = f"b{i}"
            board = EmulatedBoard(self.out / "boards" / name)
            board.start()
            self.boards[name] = board
            self.wires[name] = Wire("127.0.0.1", self.cloud.port).start()
            self.things[name] = f"soak-{self.seed % 10000}-{i}"
        self.watch = LogWatch(self.boards)
        self.watch.start()
        for name in self.boards:
            self._provision(name, ca, short)
        self.log(f"soak: {self.n} board(s) provisioned; broker {self.cloud.endpoint}:"
                 f"{self.cloud.port}; seed {self.seed}; faults {','.join(self.kinds)} at "
                 f"{self.rate:.1f}/min for {self.minutes:g} min")

    def _provision(self, name, ca, short):
        from upcert.board import provision as prov
        from upcert.pki import certs
        from upcert.pki.ca import BACKDATE

        thing, board = self.things[name], self.boards[name]
        # Renew at half of a certificate's validity: the local CA backdates notBefore (clock
        # skew), which lengthens the lifetime the device's fraction applies to.
        life = self.cert_minutes + BACKDATE.total_seconds() / 60
        renew = ({"days": 0, "fraction": round(self.cert_minutes / 2 / life, 3), "jitter_s": 10}
                 if short else {"days": 30, "fraction": 0.2, "jitter_s": 3600})
        extra = {"telemetry_interval_s": self.interval_s, "keepalive_s": 30,
                 "queue": self.queue, "renew": renew, "fleet": {"timeout_s": 15}}
        store = "nvs" if int(name[1:]) % 2 == 0 else "fs"
        cfg = prov.make_config(thing, f"localhost:{self.wires[name].port}", store, extra,
                               wifi=("soak-lab", "soak-password"))
        key = certs.generate_key("ec")
        now = dt.datetime.now(dt.timezone.utc)
        life = dt.timedelta(minutes=self.cert_minutes) if short else dt.timedelta(days=365)
        cert = ca.issue_device(thing, key.public_key(), not_after=now + life)  # notBefore as
        # the CA backdates it, so the first renewal comes at half the validity too
        res = prov.provision(board.port, cfg, cert, key, [ca.certificate], log=lambda m: None,
                             registry=self.registry)
        self.initial[thing] = res.cert_id

    # -- faults -----------------------------------------------------------------------------

    def schedule(self):
        """[(offset s, kind, board name or None)]: every kind once first, shuffled and spread
        over the first two thirds of the fault window (the run's minutes less a last fifth kept
        quiet for recovery), then at random at exponential gaps for the rate."""
        window = self.minutes * 60 * 0.8
        first = [k for k in self.kinds if k != "expiry"]  # expiry: the certificates' own
        self.rng.shuffle(first)
        gap = 60.0 / self.rate
        step = min(gap, (window * 2 / 3 - 10) / max(1, len(first)))
        out = [(10.0 + i * step, k) for i, k in enumerate(first)]
        t = out[-1][0] + max(4.0, self.rng.expovariate(1 / gap)) if out else 10.0
        while first and t < window:
            out.append((t, self.rng.choice(first)))
            t += max(4.0, self.rng.expovariate(1 / gap))
        return [(round(t, 1), k, None if k in ("broker", "service")
                 else self.rng.choice(sorted(self.boards))) for t, k in out]

    def _hold(self, lo, hi):
        # How long a fault lasts: shorter in short runs, so that each kind fits in the window.
        return self.rng.uniform(lo, lo + (hi - lo) * min(1.0, self.minutes / 5))

    def inject(self, kind, name):
        """Inject one fault now; returns its event (start, end: host times)."""
        self.watch.poll()  # lines logged so far get times before the fault's start
        rng, ev = self.rng, {"kind": kind, "boards": [name] if name else sorted(self.boards),
                             "start": time.time(), "detail": ""}
        board, wire = self.boards.get(name), self.wires.get(name)
        if kind == "wifi":
            hold, dhcp = self._hold(4, 20), rng.randint(500, 6000)
            board.network(wifi=False, dhcp_ms=dhcp)
            time.sleep(hold)
            board.network(wifi=True)
            ev["detail"] = f"AP gone {hold:.0f} s, lease {dhcp} ms after"
        elif kind == "dns":
            hold = self._hold(4, 20)
            board.network(dns=False)
            wire.reset()  # its connection drops, so it must look the broker up again
            time.sleep(hold)
            board.network(dns=True)
            ev["detail"] = f"lookups fail {hold:.0f} s"
        elif kind == "slow":
            hold, ms = self._hold(6, 20), rng.choice((3000, 6000, 20000))
            board.network(connect_ms=ms)
            wire.reset()
            time.sleep(hold)
            board.network(connect_ms=0)
            ev["detail"] = f"connects take {ms} ms for {hold:.0f} s"
        elif kind == "stall":
            ev["detail"] = f"{wire.stall()} connection(s) silent"
        elif kind == "power":
            board.power_cut()
            ev["detail"] = "power cut"
        elif kind == "broker":
            hold = self._hold(2, 8)
            for w in self.wires.values():
                w.pause()  # a dead broker refuses connections
            self.cloud.down()
            time.sleep(hold)
            self.cloud.up()
            for w in self.wires.values():
                w.resume()
            ev["detail"] = f"broker down {hold:.0f} s"
        elif kind == "service":
            from upcert.cloud import daemon

            hold = self._hold(2, 8)
            daemon.stop_service(self.cloud.state_dir)
            time.sleep(hold)
            daemon.start_service(self.cloud)
            ev["detail"] = f"provisioning service down {hold:.0f} s"
        elif kind == "job":
            from upcert.cloud import admin

            ev["detail"] = admin.create_rotation_job(self.cloud.state_dir, self.things[name])
        ev["end"] = time.time()
        self.events.append(ev)
        self.log(f"soak: +{ev['start'] - self.started:5.0f} s {kind:<7} "
                 f"{','.join(ev['boards'])}: {ev['detail']}")
        return ev

    # -- the run ----------------------------------------------------------------------------

    def run(self):
        """Set up, inject the schedule, drain, tear down; returns the report dict (also
        written as report.json, report.txt and timeline.png under out)."""
        from upcert.soak import report

        try:
            self.setup()
            self.started = time.time()
            plan = self.schedule()
            for offset, kind, name in plan:
                wait = self.started + offset - time.time()
                if wait > 0:
                    time.sleep(wait)
                self.inject(kind, name)
            self.window_end = time.time()
            rest = self.started + self.minutes * 60 - time.time()
            if rest > 0:
                time.sleep(rest)
            self._drain()
            self.ended = time.time()
            time.sleep(2)  # the last acknowledged messages reach the subscriber
        finally:
            self.teardown()
        rep = report.build(self)
        report.write(rep, self, self.out)
        return rep

    def _drain(self):
        """Wait (up to drain_s) until every board has telemetry acknowledged after the last
        fault ended and no rotation is under way."""
        last = max([e["end"] for e in self.events] or [self.started])
        deadline = time.time() + self.drain_s
        while time.time() < deadline:
            if all(self.watch.since(n, last, "upcert: published telemetry")
                   and not self._rotating(n) for n in self.boards):
                return
            time.sleep(1)

    def _rotating(self, name):
        """True while board `name` is in the middle of a rotation (started, not yet done or
        failed): a certificate issued for it is ACTIVE before the board holds it."""
        with self.watch.lock:
            lines = [ln for _, ln in self.watch.lines[name]]
        starts = [i for i, ln in enumerate(lines) if "upcert: rotation: start (" in ln]
        if not starts:
            return False
        return not any(m in ln for ln in lines[starts[-1]:] for m in (
            "upcert: rotation: done: ", "upcert: rotation: failed at ", "; rolled back to ",
            " given up after "))

    def teardown(self):
        if self.watch:
            self.watch.stop()
        if self.sub:
            self.sub.close()
        for w in self.wires.values():
            w.stop()
        for b in self.boards.values():
            b.stop()
        if self.cloud:
            self.cloud.down()

    def settings(self):
        return {"boards": self.n, "minutes": self.minutes, "faults": self.kinds,
                "rate_per_min": round(self.rate, 2), "seed": self.seed,
                "telemetry_interval_s": self.interval_s, "queue": self.queue,
                "cert_minutes": self.cert_minutes if "expiry" in self.kinds else None,
                "things": self.things}


def run(out, log=print, **settings):
    """Run a soak (settings as Soak's) and return its report."""
    s = Soak(out, log=log, **settings)
    return s.run()


def dumps(obj):
    return json.dumps(obj, indent=1, default=str)
