"""What a soak shows: per board, the telemetry published (the board's own seq and dropped
counters), acknowledged (its log) and received (the host's subscriber), with gaps and losses;
rotations started, committed, rolled back and failed by step; faults by kind with the time to
recover after each; the registry's view of every board's identity; the boards that need a
person. As a dict (report.json), a plain-text table (report.txt) and a timeline (timeline.png,
with matplotlib)."""

import json
import re
import statistics
import time

from upcert.soak import BREAKS

_ACK = re.compile(r"upcert: published telemetry seq=(\d+)")
_FAILED = re.compile(r"upcert: rotation: failed at ([\w:-]+): (.*?)(?:; retry in \d+ s)?$")
_COMMITTED = re.compile(r"upcert: rotation: committed certificate ([0-9a-f]{16})")
_JOB = re.compile(r"upcert: job (\S+) (SUCCEEDED|FAILED|REJECTED)")
_BOOT = "rst:0x"
# After the last fault, a board silent for this long (or that never recovered) needs a person.
SILENT_S = 90


def _boots(lines):
    """A board's log lines split at each boot banner: [[(t, line), ...], ...]."""
    out = [[]]
    for t, line in lines:
        if _BOOT in line and out[-1]:
            out.append([])
        out[-1].append((t, line))
    return [b for b in out if b]


def _host_boots(msgs):
    """The host's messages of one board in arrival order, split into boots: seq only grows
    within a boot (the board sends its queue in order, one message in flight; a re-sent one
    repeats the same payload)."""
    out, prev = [], None
    for t, m, raw in msgs:
        if prev is None or m["seq"] < prev[0] or (m["seq"] == prev[0] and raw != prev[1]):
            out.append([])
        out[-1].append((t, m))
        prev = (m["seq"], raw)
    return out


def _stats(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {"n": len(v), "min": round(v[0], 1), "median": round(statistics.median(v), 1),
            "max": round(v[-1], 1)}


def _messages(log_boots, host_boots):
    """Counts for one board: published (seq numbers made, per boot the highest seen), acked
    (log), received (distinct), duplicates, dropped (the board's count), gaps the board did not
    count, and acknowledged messages the host never got."""
    acked = [{int(m.group(1)) for _, ln in b for m in [_ACK.search(ln)] if m} for b in log_boots]
    hosts = [{m["seq"] for _, m in h} for h in host_boots]
    c = {"published": 0, "acked": sum(len(a) for a in acked), "received": 0, "duplicates": 0,
         "dropped": 0, "gaps_not_counted": 0, "acked_not_received": 0}
    for h, seqs in zip(host_boots, hosts, strict=True):
        top = max(seqs)
        dropped = max(m.get("dropped", 0) for _, m in h)
        c["published"] += top
        c["received"] += len(seqs)
        c["duplicates"] += len(h) - len(seqs)
        c["dropped"] += dropped
        c["gaps_not_counted"] += max(0, top - len(seqs) - dropped)
    j = 0
    missing = []
    for a in (a for a in acked if a):  # each boot's acknowledged seqs, in boot order
        k = next((i for i in range(j, len(hosts)) if a <= hosts[i]), None)
        if k is None:
            best = max(hosts[j:] or [set()], key=lambda s: len(a & s))
            missing += sorted(a - best)
        else:
            j = k + 1
    c["acked_not_received"] = len(missing)
    c["missing_seqs"] = missing[:20]
    # Messages made before the last boot's end but never acknowledged nor counted (a power cut
    # took the RAM queue): published less received less dropped, at least.
    return c


def _rotations(lines):
    r = {"started": 0, "due_by_expiry": 0, "by_job": 0, "committed": 0, "done": 0,
         "rolled_back": 0, "failed": {}, "jobs": {}}
    committed = []
    for _, ln in lines:
        if "upcert: rotation: start (" in ln:
            r["started"] += 1
        elif "upcert: rotation: due: " in ln:
            r["due_by_expiry"] += 1
        elif re.search(r"upcert: job \S+: ", ln):
            r["by_job"] += 1
        elif "upcert: rotation: done: " in ln:
            r["done"] += 1
        elif "; rolled back to " in ln:
            r["rolled_back"] += 1
        m = _COMMITTED.search(ln)
        if m:
            r["committed"] += 1
            committed.append(m.group(1))
        m = _FAILED.search(ln)
        if m:
            r["failed"][m.group(1)] = r["failed"].get(m.group(1), 0) + 1
        m = _JOB.search(ln)
        if m:
            r["jobs"][m.group(2)] = r["jobs"].get(m.group(2), 0) + 1
    return r, committed


def _recovery(ev, name, watch):
    """Seconds from the end of fault ev to board `name`'s recovery, or None (never)."""
    if ev["kind"] == "job":
        t = watch.since(name, ev["start"], f"upcert: job {ev['detail']} ")
        return None if t is None else max(0.0, t - ev["end"])
    start = ev["end"]
    if ev["kind"] in BREAKS:
        after = ev["start"]
        if ev["kind"] == "power":  # the new boot's connection
            after = watch.since(name, after, "rst:0x")
            if after is None:
                return None
        c = watch.since(name, after, "upcert: connected TLS")
        if c is None:
            return None
        start = max(start, c)
    t = watch.since(name, start, "upcert: published telemetry")
    return None if t is None else max(0.0, t - ev["end"])


def build(soak):
    """The report (a JSON-ready dict) of a finished Soak."""
    watch, t0 = soak.watch, soak.started
    by_thing = {}
    for t, topic, raw in soak.sub.received:
        try:
            m = json.loads(raw)
        except ValueError:
            continue
        by_thing.setdefault(topic.split("/")[1], []).append((t, m, raw))
    events = []
    for ev in soak.events:
        rec = {n: _recovery(ev, n, watch) for n in ev["boards"]}
        events.append({"kind": ev["kind"], "boards": ev["boards"],
                       "at_s": round(ev["start"] - t0, 1),
                       "lasted_s": round(ev["end"] - ev["start"], 1), "detail": ev["detail"],
                       "recovery_s": {n: None if v is None else round(v, 1)
                                      for n, v in rec.items()}})
    kinds = sorted({e["kind"] for e in events})
    recovery = {k: dict(_stats([v for e in events if e["kind"] == k
                                for v in e["recovery_s"].values()]),
                        unrecovered=sum(1 for e in events if e["kind"] == k
                                        for v in e["recovery_s"].values() if v is None))
                for k in kinds}
    last_fault = max([e["end"] for e in soak.events] or [t0])
    boards, people, orphans, superseded = {}, [], [], []
    now = time.time()
    for name in sorted(soak.boards):
        thing = soak.things[name]
        lines = watch.lines[name]
        msgs = by_thing.get(thing, [])
        counts = _messages(_boots(lines), _host_boots(msgs))
        rot, committed = _rotations(lines)
        held = msgs[-1][1]["cert_id"] if msgs else None
        heap = [m["free_heap"] for _, m, _ in msgs if isinstance(m.get("free_heap"), int)]
        last_pub = watch.since(name, last_fault, "upcert: published telemetry")
        why = []
        if last_pub is None:
            why.append("no telemetry acknowledged after the last fault")
        if any("Traceback (most recent call last)" in ln or "upcert: cannot start" in ln
               for _, ln in lines):
            why.append("a crash or a 'cannot start' line in its log")
        unrec = [e["kind"] for e in events if e["recovery_s"].get(name, 0) is None]
        if unrec:
            why.append("never recovered from " + ", ".join(unrec))
        certs = soak.registry.list(thing)
        status = {c["cert_id"]: c for c in certs}
        held_status = status.get(held, {}).get("status") if held else None
        if held and held_status != "ACTIVE":
            why.append(f"holds certificate {held[:16]}, {held_status} in the registry")
        chain = [soak.initial.get(thing, "")] + committed
        for c in certs:
            if c["status"] != "ACTIVE" or c["cert_id"] == held or c["not_after"] < now:
                continue
            entry = {"board": name, "cert_id": c["cert_id"][:16],
                     "expires_in_s": int(c["not_after"] - now)}
            if any(c["cert_id"].startswith(p) for p in chain if p):
                superseded.append(entry)  # an identity the board held before a rotation
            else:
                orphans.append(entry)
        boards[name] = {"thing": thing, "boots": len(_boots(lines)), **counts,
                        "min_free_heap": min(heap) if heap else None,
                        "held_cert": held[:16] if held else None, "held_status": held_status,
                        "rotations": rot,
                        "last_telemetry_s_before_end": (round(soak.ended - last_pub, 1)
                                                        if last_pub else None),
                        "needs_person": "; ".join(why) or None}
        if why:
            people.append(name)
    total = {k: sum(b[k] for b in boards.values()) for k in
             ("published", "acked", "received", "duplicates", "dropped", "gaps_not_counted",
              "acked_not_received")}
    rots = {k: sum(b["rotations"][k] for b in boards.values()) for k in
            ("started", "due_by_expiry", "by_job", "committed", "done", "rolled_back")}
    failed, jobs = {}, {}
    for b in boards.values():
        for k, v in b["rotations"]["failed"].items():
            failed[k] = failed.get(k, 0) + v
        for k, v in b["rotations"]["jobs"].items():
            jobs[k] = jobs.get(k, 0) + v
    rots["failed_by_step"], rots["jobs"] = failed, jobs
    faults = {k: sum(1 for e in events if e["kind"] == k) for k in kinds}
    return {"settings": soak.settings(), "seconds": round((soak.ended or now) - t0, 1),
            "faults": faults, "faults_total": sum(faults.values()), "recovery_s": recovery,
            "messages": total, "rotations": rots,
            "identities": {"held_active": sum(1 for b in boards.values()
                                              if b["held_status"] == "ACTIVE"),
                           "orphaned_active": orphans, "superseded_still_active": superseded},
            "needs_person": people, "boards": boards, "events": events,
            "ok": not people and not orphans and total["acked_not_received"] == 0
            and total["gaps_not_counted"] == 0}


def table(rep):
    """The report as plain text a person reads."""
    s = rep["settings"]
    out = [f"soak: {s['boards']} board(s), {s['minutes']:g} min, seed {s['seed']}, "
           f"{rep['faults_total']} faults at {s['rate_per_min']}/min, run {rep['seconds']:.0f} s",
           "", "faults survived            n   recovery s: min / median / max   unrecovered"]
    for k, n in sorted(rep["faults"].items()):
        r = rep["recovery_s"][k]
        fmt = (f"{r['min']} / {r['median']} / {r['max']}" if r["n"] else "-")
        out.append(f"  {k:<22} {n:>4}   {fmt:<33} {r['unrecovered']}")
    m = rep["messages"]
    out += ["", "telemetry      published  acked  received  dups  dropped(offline)  "
                "gaps not counted  acked but lost  min free_heap  boots  needs a person"]
    for name, b in rep["boards"].items():
        out.append(f"  {name:<12} {b['published']:>9} {b['acked']:>6} {b['received']:>9} "
                   f"{b['duplicates']:>5} {b['dropped']:>17} {b['gaps_not_counted']:>17} "
                   f"{b['acked_not_received']:>15} {str(b['min_free_heap']):>14} "
                   f"{b['boots']:>6}  {b['needs_person'] or 'no'}")
    out.append(f"  {'all':<12} {m['published']:>9} {m['acked']:>6} {m['received']:>9} "
               f"{m['duplicates']:>5} {m['dropped']:>17} {m['gaps_not_counted']:>17} "
               f"{m['acked_not_received']:>15}")
    r = rep["rotations"]
    out += ["", f"rotations: started {r['started']} (due by expiry {r['due_by_expiry']}, by job "
                f"{r['by_job']}), committed {r['committed']}, done {r['done']}, rolled back "
                f"{r['rolled_back']}; failed by step "
                f"{json.dumps(r['failed_by_step'], sort_keys=True)}; jobs "
                f"{json.dumps(r['jobs'], sort_keys=True)}"]
    i = rep["identities"]
    out += [f"identities: {i['held_active']}/{s['boards']} boards hold an ACTIVE certificate; "
            f"ACTIVE certificates nobody holds: {len(i['orphaned_active'])}; superseded but "
            f"still ACTIVE until they expire: {len(i['superseded_still_active'])}",
            f"boards that need a person: {len(rep['needs_person'])}"
            + (f" ({', '.join(rep['needs_person'])})" if rep["needs_person"] else ""),
            f"verdict: {'ok' if rep['ok'] else 'FAILED'}"]
    return "\n".join(out) + "\n"


_COLORS = {"wifi": "tab:blue", "dns": "tab:cyan", "stall": "tab:orange", "slow": "tab:olive",
           "broker": "tab:red", "service": "tab:pink", "power": "black", "job": "tab:green"}


def timeline(soak, rep, path):
    """A PNG: one row per board (telemetry received as dots, faults as coloured spans,
    rotations committed as triangles), global faults on every row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = soak.started
    names = sorted(soak.boards)
    fig, ax = plt.subplots(figsize=(14, 1.2 + 0.8 * len(names)))
    y = {n: i for i, n in enumerate(names)}
    for ev in rep["events"]:
        for n in ev["boards"]:
            x0 = ev["at_s"] / 60
            w = max(ev["lasted_s"], 1.5) / 60
            ax.broken_barh([(x0, w)], (y[n] - 0.4, 0.8), color=_COLORS.get(ev["kind"], "grey"),
                           alpha=0.35)
    for n in names:
        thing = soak.things[n]
        ts = [(t - t0) / 60 for t, topic, _ in soak.sub.received if topic.split("/")[1] == thing]
        ax.plot(ts, [y[n]] * len(ts), "|", color="tab:gray", markersize=6)
        rs = [(t - t0) / 60 for t, ln in soak.watch.lines[n] if _COMMITTED.search(ln)]
        ax.plot(rs, [y[n] + 0.25] * len(rs), "v", color="tab:green", markersize=7)
    ax.set_yticks(range(len(names)), [f"{n} ({soak.things[n]})" for n in names])
    ax.set_xlabel("minutes since the first fault window opened")
    ax.set_ylim(-0.6, len(names) - 0.4)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.35) for c in _COLORS.values()]
    handles += [plt.Line2D([], [], marker="|", ls="", color="tab:gray"),
                plt.Line2D([], [], marker="v", ls="", color="tab:green")]
    fig.legend(handles, list(_COLORS) + ["telemetry received", "rotation committed"],
               ncol=10, fontsize=8, loc="lower center")
    m = rep["messages"]
    ax.set_title(f"soak: {len(names)} boards, {rep['faults_total']} faults, "
                 f"{m['received']} messages received, {m['acked_not_received']} acknowledged "
                 f"but lost, {m['dropped']} dropped offline, {rep['rotations']['done']} "
                 f"rotations done, {len(rep['needs_person'])} need a person")
    fig.tight_layout(rect=(0, 0.12 if len(names) < 4 else 0.06, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(rep, soak, out):
    """report.json, report.txt and (with matplotlib) timeline.png in folder out."""
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    (out / "report.txt").write_text(table(rep))
    try:
        timeline(soak, rep, out / "timeline.png")
        rep["timeline"] = str(out / "timeline.png")
    except ImportError:
        rep["timeline"] = None  # matplotlib missing: `make setup` installs it
