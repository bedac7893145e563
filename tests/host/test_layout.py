"""The code's layout rules (scripts/layout.py, `make layout`): host layers one way, peers apart,
no import circle on either side."""

import importlib.util
import io

from tests.tools import ROOT

spec = importlib.util.spec_from_file_location("layout", ROOT / "scripts" / "layout.py")
layout = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layout)


def test_the_repository_keeps_the_rules():
    out = io.StringIO()
    problems = layout.report(out)
    assert problems == [], "\n".join(problems)
    text = out.getvalue()
    for part in ("base", "pki", "board", "emu", "cloud", "cli"):
        assert f"  {part} " in text  # each part listed with its size and imports


def _tree(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_upward_peer_and_circular_imports_are_found(tmp_path):
    host = _tree(tmp_path / "host" / "upcert", {
        "__init__.py": "", "errors.py": "", "paths.py": "",
        "pki/__init__.py": "", "pki/certs.py": "from upcert.board import transport\n",
        "board/__init__.py": "", "board/transport.py": "from upcert.cloud.standin import x\n",
        "cloud/__init__.py": "", "cloud/standin.py": "def f():\n    from upcert.cloud import daemon\n",
        "cloud/daemon.py": "from . import standin\n",
        "cli.py": "from upcert.pki import certs\n",
    })
    device = _tree(tmp_path / "dev" / "upcert", {
        "store.py": "def make():\n    import upcert.store_fs\n", "store_fs.py": "from upcert import store\n",
        "clock.py": "from upcert.errors import E\n", "errors.py": "",
    })
    problems = layout.report(io.StringIO(), host=host, device=device)
    text = "\n".join(problems)
    assert "upcert.pki.certs imports upcert.board.transport: upward" in text
    assert "board and cloud are peers" in text
    circle = [p for p in problems if p.startswith("host import circle:")]
    assert len(circle) == 1 and "upcert.cloud.daemon" in circle[0] and "standin" in circle[0]
    assert "device import circle: upcert.store -> upcert.store_fs -> upcert.store" in text
    assert len(problems) == 4  # the cli's downward import and clock -> errors are fine
