"""`upcert fleet report`: the fleet's certificates seen from the inventory (which certificate went
onto which board) and the registry (what each thing holds now, after rotations):

- expiring: a board's current certificate ends within `days`;
- never rotated: a board still on the certificate it was made with;
- inactive on boards: a board's current certificate is INACTIVE or REVOKED (it cannot connect);
- on no board: an ACTIVE certificate that is no board's current one (a leftover to retire).

The registry is the local stand-in's, or AWS IoT's for a region (`--aws`, factory.registry:
ListCertificates, DescribeCertificate, ListPrincipalThings). A board's current certificate is
the newest ACTIVE one of its thing in the registry, else the one the inventory recorded. Without a registry, the inventory alone (nothing is known of
rotations or status).
"""

import datetime

UTC = datetime.UTC


def _ts(value):
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, UTC)
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def report(inv, registry=None, days=30, now=None):
    now = now or datetime.datetime.now(UTC)
    horizon = now + datetime.timedelta(days=days)
    certs = registry.list() if registry is not None else []
    by_id = {c["cert_id"]: c for c in certs}
    by_thing = {}
    for c in certs:
        by_thing.setdefault(c["thing"], []).append(c)
    boards, current_ids = [], set()
    for row in inv.rows():
        if row["state"] != "done":
            continue
        active = sorted((c for c in by_thing.get(row["thing"], ()) if c["status"] == "ACTIVE"),
                        key=lambda c: (c.get("created") or 0, c["not_after"]))
        cur = active[-1] if active else by_id.get(row["cert_id"])
        cur_id = cur["cert_id"] if cur else row["cert_id"]
        not_after = _ts(cur["not_after"]) if cur else _ts(row["not_after"])
        current_ids.add(cur_id)
        boards.append({
            "thing": row["thing"], "store": row["store"], "station": row["station"],
            "chip_id": row["chip_id"], "factory_cert_id": row["cert_id"],
            "cert_id": cur_id, "status": cur["status"] if cur else "unknown",
            "not_after": not_after.isoformat() if not_after else None,
            "days_left": round((not_after - now).total_seconds() / 86400, 1)
            if not_after else None,
            "rotated": cur_id != row["cert_id"],
        })
    return {
        "generated": now.isoformat(timespec="seconds"), "days": days,
        "registry": registry is not None, "boards": boards,
        "source": None if registry is None else getattr(registry, "source", "local stand-in")
        + (f" {registry.region}" if getattr(registry, "region", None) else ""),
        "expiring": [b["thing"] for b in boards
                     if b["not_after"] and _ts(b["not_after"]) <= horizon],
        "never_rotated": [b["thing"] for b in boards if not b["rotated"]],
        "inactive_on_boards": [b["thing"] for b in boards
                               if b["status"] in ("INACTIVE", "REVOKED")],
        "on_no_board": [{"cert_id": c["cert_id"], "thing": c["thing"],
                         "not_after": _ts(c["not_after"]).isoformat()}
                        for c in certs if c["status"] == "ACTIVE"
                        and c["cert_id"] not in current_ids],
    }


def print_report(rep, console=None):
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=140)
    t = Table(title=f"fleet: {len(rep['boards'])} boards, horizon {rep['days']} days"
              + (f", registry: {rep['source']}" if rep.get("source") else ""))
    for col in ("thing", "store", "certificate", "status", "expires", "days left", "rotated"):
        t.add_column(col)
    for b in sorted(rep["boards"], key=lambda b: b["days_left"] if b["days_left"] is not None
                    else 1e9):
        soon = b["thing"] in rep["expiring"]
        t.add_row(b["thing"], b["store"], (b["cert_id"] or "")[:16], b["status"],
                  (b["not_after"] or "")[:19], f"{b['days_left']}", "yes" if b["rotated"]
                  else "no", style="red" if soon or b["status"] != "ACTIVE" else "")
    console.print(t)
    for key, title in (("expiring", f"expiring within {rep['days']} days"),
                       ("never_rotated", "never rotated"),
                       ("inactive_on_boards", "INACTIVE or REVOKED on a board")):
        console.print(f"{title}: {len(rep[key])}" + (f" ({', '.join(rep[key][:20])})"
                                                    if rep[key] else ""))
    console.print(f"ACTIVE certificates on no board: {len(rep['on_no_board'])}" + "".join(
        f"\n  {c['cert_id'][:16]} {c['thing']} expires {c['not_after'][:10]}"
        for c in rep["on_no_board"][:20]))
    if not rep["registry"]:
        console.print("(no registry: rotations and status unknown, from the inventory alone)")


def timeline_png(rep, path):
    """A PNG timeline: one row per board at its current certificate's expiry, coloured by
    status; the report's time and horizon as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boards = [b for b in rep["boards"] if b["not_after"]]
    boards.sort(key=lambda b: b["not_after"])
    now = _ts(rep["generated"])
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.3 * len(boards) + 1.5)))
    colours = {"ACTIVE": "tab:green", "INACTIVE": "tab:orange", "REVOKED": "tab:red"}
    for i, b in enumerate(boards):
        end = _ts(b["not_after"])
        colour = colours.get(b["status"], "tab:gray")
        if b["thing"] in rep["expiring"] and b["status"] == "ACTIVE":
            colour = "tab:purple"
        ax.plot([now, end], [i, i], color=colour, linewidth=4, solid_capstyle="butt")
        ax.annotate(("rotated " if b["rotated"] else "") + b["status"].lower(), (end, i),
                    xytext=(4, -3), textcoords="offset points", fontsize=7)
    ax.axvline(now, color="black", linewidth=1)
    ax.axvline(now + datetime.timedelta(days=rep["days"]), color="tab:purple", linestyle="--",
               linewidth=1, label=f"horizon ({rep['days']} days)")
    ax.set_yticks(range(len(boards)), [b["thing"] for b in boards], fontsize=8)
    ax.set_xlabel("certificate expiry (UTC)")
    ax.set_title(f"fleet expiry timeline: {len(boards)} boards, {len(rep['expiring'])} "
                 f"expiring within {rep['days']} days")
    ax.legend(loc="lower right", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
