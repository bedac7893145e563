"""Processes of the stand-in and the emulated boards, through Linux's /proc, and free ports: the
base layer, imports nothing of upcert."""

import os
import signal
import socket
import time
from pathlib import Path


def free_port(host="127.0.0.1"):
    """A TCP port that is free right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# processes, through Linux's /proc: a pid file may outlive its process, and the pid may have been
# given to another program since, so a pid counts only while its command line is ours.

def process_args(pid):
    """The command line (list of str) of a live process, or None: gone, a zombie, unreadable."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError, ValueError):
        return None
    if state in ("Z", "X") or not raw:
        return None
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]


def process_path_arg(pid, args, option):
    """The resolved path given after option (e.g. "-c") in args, read relative to the process's
    working folder; None without that option."""
    for opt, value in zip(args, args[1:], strict=False):
        if opt == option:
            path = Path(value)
            if not path.is_absolute():
                try:
                    path = Path(os.readlink(f"/proc/{pid}/cwd")) / path
                except OSError:
                    return None
            return path.resolve()
    return None


def find_processes(match):
    """pids of the live processes (but this one) whose match(pid, args) is true."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            args = process_args(int(name))
            if args and match(int(name), args):
                found.append(int(name))
    return found


def stop_process(pid, is_ours, timeout_s=10):
    """SIGTERM pid while is_ours(pid), SIGKILL after timeout_s; returns once it is gone (or after
    2 s more, e.g. a zombie that its parent has not reaped yet, which is_ours does not count)."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 2)):
        if not is_ours(pid):
            return
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait_s
        while is_ours(pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def alive(pid):
    """True if process `pid` exists and is not a zombie waiting for its parent."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def running_pid(pid_file):
    """The pid in `pid_file` if that process is alive, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and alive(pid) else None
