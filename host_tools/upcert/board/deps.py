"""Device dependencies fetched at set-up time: micropython-umqtt.simple from the package index.

The sdist has no setup.py, so pip refuses it (1.3.4, checked); we ask pip's configured index for
the file list (PEP 691 JSON), download the pinned sdist, check its sha256 and unpack the module.
"""

import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

from upcert.errors import UpcertError

UMQTT_PROJECT = "micropython-umqtt-simple"
UMQTT_VERSION = "1.3.4"
UMQTT_SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"
_MEMBER = "umqtt/simple.py"


def index_url():
    """The index pip is configured with (PIP_INDEX_URL, pip config), else pip's default."""
    try:
        from pip._internal.configuration import Configuration

        conf = Configuration(isolated=False)
        conf.load()
        for key in ("global.index-url", ":env:.index-url", "install.index-url"):
            try:
                return conf.get_value(key)
            except Exception:
                continue
    except Exception:
        pass
    from pip._internal.models.index import PyPI

    return PyPI.simple_url


def _get(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read()


def fetch_umqtt(dest_dir):
    """Make dest_dir/umqtt/simple.py (and __init__.py); return the module path. Idempotent."""
    dest = Path(dest_dir) / "umqtt"
    target = dest / "simple.py"
    stamp = dest / ".sha256"
    if target.exists() and stamp.exists() and stamp.read_text().strip() == UMQTT_SHA256:
        return target
    base = index_url().rstrip("/")
    try:
        listing = json.loads(
            _get(f"{base}/{UMQTT_PROJECT}/", "application/vnd.pypi.simple.v1+json")
        )
    except Exception as exc:
        raise UpcertError(
            f"cannot list {UMQTT_PROJECT} on the package index {base}: {exc}"
        ) from exc
    want = f"{UMQTT_VERSION}.tar.gz"
    files = [f for f in listing.get("files", []) if f["filename"].endswith(want)]
    if not files:
        raise UpcertError(f"{UMQTT_PROJECT} {UMQTT_VERSION} sdist not found on {base}")
    entry = files[0]
    url = urllib.request.urljoin(f"{base}/{UMQTT_PROJECT}/", entry["url"])
    data = _get(url)
    digest = hashlib.sha256(data).hexdigest()
    if digest != UMQTT_SHA256:
        raise UpcertError(
            f"{entry['filename']} has sha256 {digest}, expected {UMQTT_SHA256}: refusing it"
        )
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/" + _MEMBER)), None)
        if member is None:
            raise UpcertError(f"{entry['filename']} has no {_MEMBER}")
        source = tar.extractfile(member).read()
    dest.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source)
    (dest / "__init__.py").write_bytes(b"")
    stamp.write_text(UMQTT_SHA256 + "\n")
    return target


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    dest = argv[0] if argv else ".build/deps"
    try:
        path = fetch_umqtt(dest)
    except UpcertError as exc:
        print(f"upcert: {exc}", file=sys.stderr)
        return 1
    print(f"umqtt.simple {UMQTT_VERSION} (sha256 ok) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
