"""The provisioning service as a background process of the stand-in: start it, find it by its
pid file and command line, stop it. What it runs is upcert.cloud.service."""

import os
import subprocess
import sys
import time
from pathlib import Path

from upcert.errors import UpcertError
from upcert.paths import ROOT
from upcert.procs import find_processes, process_args, process_path_arg, stop_process
from upcert.validate import write_private

_procs = {}  # pid -> Popen of services this process started (reaped by stop_service)


class ServiceError(UpcertError):
    """The provisioning service cannot start or stop."""


def _pid_ok(state_dir, pid, args=None):
    """True when pid is a live provisioning service of state_dir (`-m upcert.cloud.service
    --state <state_dir>`): not a dead one, nor a reused pid."""
    args = args or process_args(pid)
    return bool(args) and "upcert.cloud.service" in args and \
        process_path_arg(pid, args, "--state") == Path(state_dir).resolve()


def _service_pid(state_dir):
    try:
        return int((Path(state_dir) / "provisioning.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def service_running(state_dir):
    """True while the provisioning service of state_dir runs."""
    pid = _service_pid(state_dir)
    return pid is not None and _pid_ok(Path(state_dir), pid)


def service_state(state_dir):
    """("running" | "dead" | "stopped", pid or None): dead when provisioning.pid names a process
    that is gone or no longer ours (the service crashed or was killed), stopped without it."""
    pid = _service_pid(state_dir)
    if pid is None:
        return "stopped", None
    return ("running" if _pid_ok(Path(state_dir), pid) else "dead"), pid


def start_service(cloud, timeout_s=20):
    """Start the service for a running cloud; wait until it is subscribed; its pid."""
    state = cloud.state_dir.resolve()
    ready, log_path = state / "provisioning.ready", state / "provisioning.log"
    ready.unlink(missing_ok=True)
    offset = log_path.stat().st_size if log_path.exists() else 0
    here = str(ROOT / "host_tools")  # so that `-m upcert...` finds this copy
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p))
    with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "upcert.cloud.service", "--state", str(state)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, umask=0o077)
    _procs[proc.pid] = proc
    write_private(state / "provisioning.pid", f"{proc.pid}\n")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready.exists():
            return proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop_service(state)
    with open(log_path, "rb") as f:
        f.seek(offset)
        tail = "\n".join(f.read().decode(errors="replace").splitlines()[-15:])
    why = f"exited with code {proc.returncode}" if proc.returncode is not None else \
        f"did not get ready within {timeout_s} s"
    raise ServiceError(f"the provisioning service {why} (log: {log_path}):\n{tail}")


def stop_service(state_dir, timeout_s=10):
    """Stop the service of state_dir (SIGTERM, then SIGKILL), and any other service process of
    state_dir whose pid file was lost or overwritten; nothing to do if stopped."""
    state = Path(state_dir)
    pid = _service_pid(state)
    strays = find_processes(lambda p, args: _pid_ok(state, p, args))
    for p in ([pid] if pid is not None else []) + [p for p in strays if p != pid]:
        stop_process(p, lambda q: _pid_ok(state, q), timeout_s)
        if p in _procs:
            _procs.pop(p).wait()
    for name in ("provisioning.pid", "provisioning.ready"):
        (state / name).unlink(missing_ok=True)
