"""The stand-in's port 443: AWS IoT serves MQTT with client certificates on 443 only to clients
that offer ALPN `x-amzn-mqtt-ca` (AWS IoT Developer Guide, "Protocols, port mappings, and
authentication"). HAProxy (Debian's `haproxy`) reads the ClientHello without terminating TLS
(`req.ssl_alpn`) and passes such a connection, bytes untouched, to the same mosquitto; any other
client is refused: the connection is closed before a byte is answered.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

from upcert.errors import UpcertError
from upcert.procs import free_port, process_args, running_pid, stop_process
from upcert.validate import write_private

ALPN = "x-amzn-mqtt-ca"
_PATHS = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")

_CONFIG = """\
# written by upcert (host_tools/upcert/cloud/alpn.py); regenerated at every start
global
    pidfile {pid}
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend aws_iot_443
    bind {host}:{port}
    # wait for the ClientHello (at most 5 s), then let through only a TLS ClientHello that
    # offers ALPN {alpn}; everything else is rejected: its connection is closed
    tcp-request inspect-delay 5s
    tcp-request content reject unless {{ req.ssl_hello_type 1 }} {{ req.ssl_alpn {alpn} }}
    default_backend mosquitto
backend mosquitto
    server broker {host}:{backend}
"""


class AlpnError(UpcertError):
    """The port-443 listener cannot start or stop."""


def find_haproxy():
    path = shutil.which("haproxy") or next((p for p in _PATHS if os.access(p, os.X_OK)), None)
    if not path:
        raise AlpnError("haproxy not found: run `make setup` (apt-get install haproxy)")
    return path


class AlpnGate:
    """HAProxy in state_dir on `port` (None: the one recorded before, else a free one) in front
    of the broker at host:backend_port. start() / stop() / is_running()."""

    def __init__(self, state_dir, backend_port, port=None, host="127.0.0.1"):
        self.state_dir = Path(state_dir)
        self.backend_port = backend_port
        self.host = host
        self.conf_path = self.state_dir / "haproxy.cfg"
        self.pid_path = self.state_dir / "haproxy.pid"
        self.log_path = self.state_dir / "haproxy.log"
        self.port = port

    def _ours(self, pid, args=None):
        args = args or process_args(pid)
        return bool(args) and "haproxy" in Path(args[0]).name and str(self.conf_path) in args

    def is_running(self):
        pid = running_pid(self.pid_path)
        return pid is not None and self._ours(pid)

    def start(self, timeout_s=10):
        """Start (or restart) the listener; returns its port once it accepts connections."""
        self.stop()
        if self.port is None:
            self.port = free_port(self.host)
        write_private(self.conf_path, _CONFIG.format(
            pid=self.pid_path, host=self.host, port=self.port, backend=self.backend_port,
            alpn=ALPN))
        exe = find_haproxy()
        check = subprocess.run([exe, "-c", "-q", "-f", str(self.conf_path)], capture_output=True,
                               text=True)
        if check.returncode:
            raise AlpnError(f"haproxy refuses {self.conf_path}: {check.stderr.strip()}")
        with open(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
                  "ab") as out:
            proc = subprocess.Popen([exe, "-db", "-f", str(self.conf_path)],
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        write_private(self.pid_path, f"{proc.pid}\n")  # -db: haproxy writes no pid file itself
        deadline = time.monotonic() + timeout_s
        import socket

        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace").splitlines()[-5:]
                raise AlpnError(f"haproxy exited with code {proc.returncode} (log "
                                f"{self.log_path}): " + " | ".join(tail))
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self.port
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AlpnError(f"haproxy did not listen on {self.host}:{self.port} within "
                        f"{timeout_s} s (log {self.log_path})")

    def stop(self, timeout_s=10):
        pid = running_pid(self.pid_path)
        if pid is not None:
            stop_process(pid, self._ours, timeout_s)
        self.pid_path.unlink(missing_ok=True)
