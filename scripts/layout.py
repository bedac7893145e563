"""The layout of upcert's code, and its rules: `make layout` prints each part (host subpackage or
device module group), its size and what it imports, and exits 1 on a broken rule.

Host (host_tools/upcert): layers, each importing only its own package and the layers below it:
    cli, commands, __main__   -> factory, soak, provision_aws, the subsystems and below
    factory, soak             -> provision_aws, the subsystems and below (the production line,
                                 the field day)
    provision_aws             -> the subsystems and below (a board on AWS needs board and aws)
    board, emu, cloud, aws    -> pki and the base, never one another
    pki                       -> the base
    errors, paths, policy, procs, validate (the base) -> the base
Device (firmware/upcert): no import circle, counting imports inside functions too.
Every import of an upcert module is counted, at module level or inside a function.
"""

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = ROOT / "host_tools" / "upcert"
DEVICE = ROOT / "firmware" / "upcert"
BASE = ("errors", "paths", "policy", "procs", "validate")
SUBSYSTEMS = ("board", "emu", "cloud", "aws")
TOP = ("cli", "commands", "__main__")
RANK = {**dict.fromkeys(BASE, 0), "pki": 1, **dict.fromkeys(SUBSYSTEMS, 2), "provision_aws": 2.5,
        "factory": 3, "soak": 3, **dict.fromkeys(TOP, 4)}


def _name(path, top):
    rel = path.relative_to(top).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(("upcert", *parts))


def imports(path, package):
    """The upcert modules `path` imports (absolute names), with the line of each."""
    tree = ast.parse(path.read_text(), str(path))
    here = package.split(".")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "upcert"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "upcert":
                continue
            for a in node.names:  # `from upcert.cloud import admin` names a module
                found.append((f"{mod}.{a.name}", node.lineno))
    return found


def modules(top):
    """{module name: path} of the .py files under top."""
    return {_name(p, top): p for p in sorted(top.rglob("*.py"))}


def resolve(name, known):
    """The known module that `name` (a module, or a name inside one) refers to, or None."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def part(module):
    """The host part a module belongs to: 'pki', 'board', ..., or the base module's own name."""
    return module.split(".")[1] if module.count(".") >= 1 else "upcert"


def graph(top):
    known = modules(top)
    edges = defaultdict(set)
    lines = {}
    for mod, path in known.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for name, line in imports(path, pkg):
            target = resolve(name, known)
            if target and target != mod and target != "upcert":
                edges[mod].add(target)
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                lines.setdefault((mod, target), f"{where}:{line}")
    return known, edges, lines


def cycles(edges):
    """Every import circle, as a list of modules (each circle once, smallest first)."""
    found, seen = [], set()

    def visit(node, stack, on_stack):
        for nxt in sorted(edges.get(node, ())):
            if nxt in on_stack:
                loop = stack[stack.index(nxt):]
                key = frozenset(loop)
                if key not in seen:
                    seen.add(key)
                    found.append(loop + [nxt])
            elif nxt not in done:
                visit(nxt, stack + [nxt], on_stack | {nxt})
        done.add(node)

    done = set()
    for node in sorted(edges):
        if node not in done:
            visit(node, [node], {node})
    return found


def host_problems(edges, lines):
    problems = []
    for mod, targets in sorted(edges.items()):
        src = part(mod)
        for t in sorted(targets):
            dst = part(t)
            if src == dst:
                continue
            if src not in RANK or dst not in RANK:
                problems.append(f"{lines[mod, t]}: {mod} -> {t}: a part outside the layers "
                                "(add it to scripts/layout.py)")
            elif RANK[dst] > RANK[src]:
                problems.append(f"{lines[mod, t]}: {mod} imports {t}: upward "
                                f"({src} is below {dst})")
            elif RANK[dst] == RANK[src] and src in SUBSYSTEMS:
                problems.append(f"{lines[mod, t]}: {mod} imports {t}: {src} and {dst} are "
                                "peers and must not import each other")
    return problems


def report(out=sys.stdout, host=HOST, device=DEVICE):
    """Print the layout; the list of broken rules (empty when all hold)."""
    problems = []
    known, edges, lines = graph(host)
    parts = defaultdict(list)
    for mod in known:
        parts[part(mod) if part(mod) in RANK and part(mod) not in BASE + TOP else
              ("base" if part(mod) in BASE or mod == "upcert" else "cli")].append(mod)
    print("host_tools/upcert (CPython)", file=out)
    for name in ("base", "pki", *SUBSYSTEMS, "provision_aws", "factory", "soak", "cli"):
        mods = parts.get(name, [])
        size = sum(len(known[m].read_text().splitlines()) for m in mods)
        uses = sorted({part(t) for m in mods for t in edges.get(m, ())} - {name}
                      - (set(BASE) if name == "base" else set()))
        uses = sorted({"base" if u in BASE else "cli" if u in TOP else u for u in uses} - {name})
        print(f"  {name:<13} {len(mods):>2} modules {size:>5} lines  imports: "
              f"{', '.join(uses) or '-'}", file=out)
    problems += host_problems(edges, lines)
    problems += [f"host import circle: {' -> '.join(c)}" for c in cycles(edges)]

    known, edges, lines = graph(device)
    size = sum(len(p.read_bytes()) for p in known.values())
    print(f"firmware/upcert (MicroPython): {len(known)} modules, {size} bytes of source", file=out)
    problems += [f"device import circle: {' -> '.join(c)}" for c in cycles(edges)]
    return problems


def main():
    problems = report()
    for p in problems:
        print(f"layout: {p}", file=sys.stderr)
    print("layout: ok" if not problems else f"layout: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
