"""A throwaway PostgreSQL server for tests and benchmarks: Debian's postgresql binaries, initdb
into a fresh folder, pg_ctl start on a free loopback port with trust authentication (loopback
only), pg_ctl stop at the end. PostgreSQL refuses to run as root, so as root it runs as
`nobody` (runuser), in a folder owned by it."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager


def binaries():
    """(initdb, pg_ctl) paths, or None when PostgreSQL is not installed."""
    found = []
    for name in ("initdb", "pg_ctl"):
        path = shutil.which(name) or next(iter(sorted(glob.glob(
            f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
        found.append(path)
    return tuple(found) if all(found) else None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server():
    """Yields a postgresql:// URL of a running server; stops and removes it afterwards."""
    bins = binaries()
    if bins is None:
        raise FileNotFoundError("PostgreSQL (initdb, pg_ctl) not found: apt-get install "
                                "postgresql (scripts/setup.sh does)")
    initdb, pg_ctl = bins
    # as `nobody` the server needs a folder it can reach: /tmp may be the owner's only
    base = next((d for d in (tempfile.gettempdir(), "/var/tmp", "/dev/shm")
                 if os.geteuid() != 0 or os.stat(d).st_mode & 0o001), tempfile.gettempdir())
    folder = tempfile.mkdtemp(prefix="upcert-pg-", dir=base)
    data = os.path.join(folder, "data")
    as_user = []
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        os.chmod(folder, 0o700)
        as_user = ["runuser", "-u", "nobody", "--"]
    port = _free_port()
    env = dict(os.environ, LANG="C", LC_ALL="C")
    made = subprocess.run(as_user + [initdb, "-D", data, "-A", "trust", "-U", "upcert", "-E",
                                     "UTF8"], capture_output=True, text=True, env=env,
                          cwd=folder, timeout=120)
    if made.returncode:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {made.stderr.strip()[-500:]}")
    opts = f"-p {port} -h 127.0.0.1 -k {folder} -c fsync=off"
    subprocess.run(as_user + [pg_ctl, "-D", data, "-o", opts, "-l",
                              os.path.join(folder, "log"), "-w", "-t", "60", "start"],
                   check=True, capture_output=True, env=env, cwd=folder, timeout=120)
    try:
        yield f"postgresql://upcert@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [pg_ctl, "-D", data, "-m", "fast", "-w", "stop"],
                       capture_output=True, env=env, cwd=folder, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
