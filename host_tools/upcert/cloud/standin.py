"""The local AWS IoT Core stand-in: mosquitto with AWS's TLS 1.2 policy, client certificates from
the local CA and per-thing topic authorisation, plus (services=True) the identity plugin, a CRL of
the registry's non-ACTIVE certificates and the provisioning service; host-side MQTT clients for it.
"""

import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt

from upcert import policy
from upcert.cloud import daemon
from upcert.cloud.limits import Throttle, parse_validity
from upcert.errors import UpcertError
from upcert.pki.ca import ADMIN_CN, LocalCa
from upcert.procs import (  # noqa: F401 (free_port: tests)
    find_processes,
    free_port,
    process_args,
    process_path_arg,
    stop_process,
)
from upcert.validate import write_private

ENDPOINT = "localhost"  # the server certificate names localhost and 127.0.0.1
# Claim certificates (provisioning by claim, Cloud.claim_credentials): their CN starts with this;
# the identity plugin and the provisioning service treat them as claims, not things.
CLAIM_PREFIX = "claim-"
# AWS IoT security policy IoTSecurityPolicy_TLS12_1_2_2022_10, OpenSSL names
# (AWS IoT Developer Guide, "Transport security in AWS IoT Core").
AWS_TLS12_CIPHERS = tuple(
    f"{kx}{suite}"
    for kx in ("ECDHE-ECDSA-", "ECDHE-RSA-")
    for suite in ("AES128-GCM-SHA256", "AES128-SHA256", "AES128-SHA",
                  "AES256-GCM-SHA384", "AES256-SHA384", "AES256-SHA")
) + ("AES128-GCM-SHA256", "AES128-SHA256", "AES128-SHA",
     "AES256-GCM-SHA384", "AES256-SHA256", "AES256-SHA")
_MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
# CreateCertificateFromCsr quota per thing (a token bucket: CSR_RATE requests per second, at most
# CSR_BURST in a row; more get AWS's 429 ThrottlingException) and the life of a certificate left
# PENDING_ACTIVATION (AWS: its ownership token expires after 1 h and the certificate is deleted).
CSR_RATE, CSR_BURST, PENDING_TTL = 1.0, 5, "1h"

# Per-thing authorisation. AWS policies say `${iot:Connection.Thing.ThingName}`/`${iot:ClientId}`;
# here the certificate CN is the thing name and the username (%u). With services the identity
# plugin sets it at CONNECT and refuses (CONNACK 5) a device whose client id is not its CN, as
# AWS's recommended iot:Connect policy does, before the newcomer could close that client's
# connection; the admin identity may use any client id. Without services, mosquitto's
# use_identity_as_username sets the CN and the client id is not checked.
# mosquitto alone cannot send a reply only to the client that asked (AWS does): with services the
# identity plugin (plugin/upcert_identity.c) restricts each service reply to the thing that asked;
# without them every device subscribed to `.../accepted` would see every reply. Both payload
# formats (json, cbor) are allowed, so that a cbor request reaches the service and gets a clear
# rejection.
# `$aws/certificates/create/json` (CreateKeysAndCertificate: a server-made private key) is not
# offered.
# ACL wildcards do not match topics starting with "$" (MQTT 3.1.1 §4.7.2; checked): `$aws/#`.
# Refusals differ from AWS (checked): mosquitto grants every SUBACK and filters each delivery,
# and drops a forbidden PUBLISH (MQTT 5: PUBACK "Not authorized"); AWS refuses or disconnects.
# mosquitto logs a warning for each `pattern` line without %u/%c; they apply to all users.
# The ACL is generated from the device policy that `upcert aws setup` gives AWS (policy.py), for
# the templates this stand-in offers (its claim template excepted: devices never call it).
# claim_cns (later: the stand-in's claim identities) get the claim policy instead.
_ACL_REGION, _ACL_ACCOUNT = "local", "000000000000"  # not in the ACL: topics only


def claim_topics():
    """The claim policy as the identity plugin takes it (plugin_opt_claim_topics): "r TOPIC" and
    "w TOPIC" entries joined by ';'. With the plugin a claim connects as "<client id>@<CN>",
    which acl_file cannot name, so the plugin holds claims to this (plugin/upcert_identity.c)."""
    access = policy.topic_access(policy.claim_policy(_ACL_REGION, _ACL_ACCOUNT))
    modes = {"read": "r", "write": "w", "readwrite": "rw"}
    parts = [f"{m} {t}" for t, a in access.items() for m in modes[a]]
    if any(c in t for t in access for c in "; \n+#"):
        raise CloudError("claim policy topics must not hold ';', spaces or wildcards")
    return ";".join(parts)


def acl_text(templates, claim_cns=()):
    """The stand-in's mosquitto ACL: policy.device_policy for every device (by CN), the claim
    policy for the CNs in claim_cns, the admin identity unrestricted."""
    device = policy.device_policy(_ACL_REGION, _ACL_ACCOUNT,
                                  [t for t in templates if t != policy.CLAIM_TEMPLATE])
    claim = policy.claim_policy(_ACL_REGION, _ACL_ACCOUNT)
    return policy.mosquitto_acl(device, ADMIN_CN, claim, claim_cns)


# mosquitto 2.0's `tls_version` is a minimum only (mosquitto.conf(5)) and `ciphers_tls1.3` cannot
# be emptied, so TLS 1.3 is switched off through OpenSSL's own configuration (OPENSSL_CONF).
# SECLEVEL=2 as in Debian's openssl.cnf, which this file replaces for mosquitto.
_OPENSSL_CNF = """\
openssl_conf = upcert_init
[upcert_init]
ssl_conf = upcert_ssl
[upcert_ssl]
system_default = upcert_tls
[upcert_tls]
MinProtocol = TLSv1.2
MaxProtocol = TLSv1.2
CipherString = DEFAULT:@SECLEVEL=2
"""


class CloudError(UpcertError):
    """The local broker cannot start, stop or be reached."""


def find_mosquitto():
    """Path of the mosquitto binary (Debian puts it in /usr/sbin, often not on PATH)."""
    path = shutil.which("mosquitto") or next(
        (p for p in _MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)
    if not path:
        raise CloudError("mosquitto not found: run `make setup` (apt-get install mosquitto)")
    return path


class Cloud:
    """mosquitto in state_dir, configured like AWS IoT Core; see up(). No I/O until up().

    services: also load the identity plugin, enforce certificate status through a CRL and run
    the provisioning service (upcert.cloud.service); cert_validity ("10m", "12h", "365d") and
    templates (provisioning template names) configure that service; fault (a name of
    upcert.cloud.faults.FAULTS, for tests) makes it answer CreateCertificateFromCsr badly on purpose;
    csr_rate (requests per second) and csr_burst set that API's quota per thing; pending_ttl
    ("1h" as on AWS; "2s" in tests) how long an ownership token and a certificate left
    PENDING_ACTIVATION live. port None: the one recorded by an earlier up() in state_dir, else a
    free one. ciphers: the TLS 1.2 suites offered (OpenSSL names), a subset of AWS's list; tests
    narrow it to one suite to make the client use that one.
    """

    def __init__(self, state_dir, ca, port=None, host="127.0.0.1", server_cert=None,
                 server_key=None, extra_conf="", services=True, cert_validity="365d",
                 templates=("upcert-rotation",), registry_path=None, fault=None,
                 csr_rate=CSR_RATE, csr_burst=CSR_BURST, pending_ttl=PENDING_TTL,
                 alpn=False, alpn_port=None, ciphers=AWS_TLS12_CIPHERS, claim_cns=()):
        from upcert.cloud.faults import check

        parse_validity(cert_validity)  # bad values fail here, not in the service's log
        parse_validity(pending_ttl)
        Throttle(csr_rate, csr_burst)
        self.csr_rate, self.csr_burst, self.pending_ttl = csr_rate, csr_burst, pending_ttl
        if isinstance(ciphers, str) or not ciphers or set(ciphers) - set(AWS_TLS12_CIPHERS):
            raise CloudError(f"ciphers {ciphers!r}: give a non-empty list of AWS IoT's TLS 1.2 "
                             f"suites in OpenSSL names ({', '.join(AWS_TLS12_CIPHERS)})")
        self.ciphers = tuple(ciphers)
        self.fault = check(fault)
        self.claim_cns = tuple(claim_cns)  # certificate CNs held to the claim policy (acl_text)
        if isinstance(templates, str) or not templates:
            raise CloudError("templates must be a non-empty list of provisioning template names")
        self.services = bool(services)
        if self.fault and not self.services:
            raise CloudError(f"fault {fault!r} bends the provisioning service's answers, but "
                             "services=False runs none: drop one of the two")
        self.cert_validity = cert_validity
        self.templates = tuple(templates)
        self.state_dir = Path(state_dir)
        self.ca = ca
        self.json_path = self.state_dir / "cloud.json"
        # Boards dial the port they were provisioned with: one recorded by an earlier `up` here
        # is kept (after a crash, `upcert cloud up` comes back where the boards look).
        self._port_recorded = False
        if port is None:
            recorded = self._recorded().get("port")
            if isinstance(recorded, int) and 0 < recorded < 65536:
                port, self._port_recorded = recorded, True
        self.port = port
        self.host = host
        self.endpoint = ENDPOINT
        self.server_cert = Path(server_cert or ca.server_pem)
        self.server_key = Path(server_key or ca.server_key)
        self.extra_conf = extra_conf
        self._auto_port = port is None  # picked by us: another may be picked if taken
        self._proc = None
        self._log_offset = 0
        self.conf_path = self.state_dir / "mosquitto.conf"
        self.acl_path = self.state_dir / "acl"
        self.log_path = self.state_dir / "mosquitto.log"
        self.pid_path = self.state_dir / "mosquitto.pid"
        self._openssl_path = self.state_dir / "openssl.cnf"
        self._out_path = self.state_dir / "mosquitto.out"
        self.registry_path = Path(registry_path or self.state_dir / "registry.sqlite3")
        self.crl_path = self.state_dir / "crl.pem"
        self.plugin_path = None  # built by up() when services
        # alpn: also AWS's port 443, MQTT only for clients offering ALPN x-amzn-mqtt-ca
        # (cloud/alpn.py); its port: alpn_port, else the one recorded, else a free one
        self.alpn = bool(alpn)
        recorded = self._recorded().get("alpn_port") if alpn_port is None else alpn_port
        self.alpn_port = recorded if isinstance(recorded, int) and 0 < recorded < 65536 else None

    @classmethod
    def load(cls, state_dir, ca):
        """The Cloud whose settings `up()` saved in state_dir/cloud.json (running or not)."""
        path = Path(state_dir) / "cloud.json"
        try:
            saved = json.loads(path.read_text())
            return cls(state_dir, ca, port=saved["port"], host=saved["host"],
                       server_cert=saved["server_cert"], server_key=saved["server_key"],
                       extra_conf=saved.get("extra_conf", ""),
                       services=saved.get("services", False),
                       cert_validity=saved.get("cert_validity", "365d"),
                       templates=saved.get("templates", ["upcert-rotation"]),
                       registry_path=saved.get("registry"), fault=saved.get("fault"),
                       csr_rate=saved.get("csr_rate", CSR_RATE),
                       csr_burst=saved.get("csr_burst", CSR_BURST),
                       pending_ttl=saved.get("pending_ttl", PENDING_TTL),
                       alpn=saved.get("alpn", False), alpn_port=saved.get("alpn_port"),
                       ciphers=saved.get("ciphers", AWS_TLS12_CIPHERS),
                       claim_cns=saved.get("claim_cns", ()))
        except FileNotFoundError:
            raise CloudError(f"no local cloud in {state_dir}: run `upcert cloud up`") from None
        except (ValueError, KeyError, TypeError):
            raise CloudError(f"{path} is corrupt: stop mosquitto if it runs (see "
                             f"{Path(state_dir) / 'mosquitto.pid'}), delete it, run `upcert "
                             "cloud up`") from None

    @classmethod
    def from_state(cls, state_dir):
        """Cloud.load with the local CA that `up()` recorded in cloud.json."""
        path = Path(state_dir) / "cloud.json"
        try:
            ca_dir = json.loads(path.read_text())["ca_dir"]
        except FileNotFoundError:
            raise CloudError(f"no local cloud in {state_dir}: run `upcert cloud up`") from None
        except (ValueError, KeyError, TypeError):
            raise CloudError(f"{path} names no CA directory: run `upcert cloud down` and "
                             "`upcert cloud up` again") from None
        return cls.load(state_dir, LocalCa.load(ca_dir))

    def _recorded(self):
        """What `up()` saved in cloud.json (a dict; empty when there is none or it is corrupt)."""
        try:
            saved = json.loads(self.json_path.read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def _state_json(self, pid):
        return {"host": self.host, "port": self.port, "pid": pid,
                "server_cert": str(self.server_cert), "server_key": str(self.server_key),
                "extra_conf": self.extra_conf, "ca_dir": str(self.ca.directory),
                "services": self.services, "cert_validity": self.cert_validity,
                "templates": list(self.templates), "registry": str(self.registry_path),
                "fault": self.fault, "csr_rate": self.csr_rate, "csr_burst": self.csr_burst,
                "pending_ttl": self.pending_ttl, "alpn": self.alpn, "alpn_port": self.alpn_port,
                "ciphers": list(self.ciphers), "claim_cns": list(self.claim_cns)}

    def __enter__(self):
        if not self.is_running():
            self.up()
        return self

    def __exit__(self, *exc):
        self.down()

    # configuration ------------------------------------------------------------------------

    def config_text(self):
        """mosquitto.conf for this broker (mosquitto.conf(5), version 2.0)."""
        user = pwd.getpwuid(os.geteuid()).pw_name  # as root, mosquitto drops to this user
        return "\n".join([
            "# written by upcert (host_tools/upcert/cloud/standin.py); regenerated by every `up`",
            "per_listener_settings false",
            # Clients have no MQTT username, but use_identity_as_username gives them the
            # certificate CN before authentication, so they are not anonymous (checked).
            "allow_anonymous false",
            "persistence false",
            f"user {user}",
            f"log_dest file {self.log_path}",
            *(f"log_type {t}" for t in ("error", "warning", "notice", "information")),
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            f"acl_file {self.acl_path}",
            # plugin_opt_*: read by mosquitto_plugin_init in plugin/upcert_identity.c
            *([f"plugin {self.plugin_path}", f"plugin_opt_admin {ADMIN_CN}",
               f"plugin_opt_crlfile {self.crl_path}",
               f"plugin_opt_claim_prefix {CLAIM_PREFIX}",
               f"plugin_opt_claim_topics {claim_topics()}"] if self.services else []),
            # Listener options below this line; one placed above it makes mosquitto open a
            # default plaintext listener on 1883 (seen with max_qos).
            f"listener {self.port} {self.host}",
            "max_qos 1",  # AWS IoT Core has no QoS 2 (Developer Guide, "MQTT")
            f"cafile {self.ca.ca_pem}",
            f"certfile {self.server_cert}",
            f"keyfile {self.server_key}",
            "require_certificate true",
            # With services the identity plugin makes the CN the username at CONNECT and refuses
            # a device's client id other than its CN; mosquitto's own option would skip the
            # plugin and let a newcomer close the client whose id it takes (upcert_identity.c).
            *([] if self.services else ["use_identity_as_username true"]),
            "tls_version tlsv1.2",
            f"ciphers {':'.join(self.ciphers)}",
            # reloaded on SIGHUP; a listed certificate fails the handshake (mosquitto.conf(5) crlfile; tests/host/test_provisioning.py)
            *([f"crlfile {self.crl_path}"] if self.services else []),
            self.extra_conf,
            "",
        ])

    def _write_config(self):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)  # the registry, logs and config are nobody else's
        ca = self.ca
        for path in (ca.ca_pem, self.server_cert, self.server_key, ca.admin_pem, ca.admin_key):
            if not Path(path).exists():
                raise CloudError(f"{path} is missing: run `upcert ca init`")
        if self.services:
            from upcert.cloud.plugin import build_plugin, write_crl
            from upcert.cloud.registry import Registry

            self.plugin_path = build_plugin()
            write_crl(ca, Registry(self.registry_path).revocations(), self.crl_path)
        write_private(self.conf_path, self.config_text())
        write_private(self.acl_path, acl_text(self.templates, self.claim_cns))
        write_private(self._openssl_path, _OPENSSL_CNF)

    def enforce(self, registry=None):
        """Rewrite the CRL from the registry and make mosquitto reload it (SIGHUP): new
        connections with a non-ACTIVE certificate fail the handshake and the identity plugin
        disconnects open ones. Certificates the local CA signed but nobody registered are
        accepted (a deny-list; AWS accepts registered certificates only)."""
        from upcert.cloud.plugin import write_crl
        from upcert.cloud.registry import Registry

        registry = registry or Registry(self.registry_path)
        write_crl(self.ca, registry.revocations(), self.crl_path)
        self.reload()

    def reload(self, timeout_s=5):
        """SIGHUP mosquitto (it re-reads its CRL, ACL and certificates) and wait until it has;
        False if it is not running."""
        if not self._broker_running():
            return False
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        os.kill(self._pid(), signal.SIGHUP)
        # mosquitto logs "Reloading config." as it starts reloading and handles no socket
        # until it is done (one thread, src/loop.c), so a handshake after the line is the proof.
        # Signals coalesce: a SIGHUP that lands while another process's (the provisioning
        # service's) reload is pending may bring no reload of its own, so it is sent again
        # once half the time has passed without one.
        deadline = time.monotonic() + timeout_s
        again = time.monotonic() + timeout_s / 2
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                if b"Reloading config." in f.read():
                    return self._handshake_ok()
            if again and time.monotonic() > again:
                again = None
                os.kill(self._pid(), signal.SIGHUP)
            time.sleep(0.005)
        raise CloudError(f"mosquitto did not reload its configuration within {timeout_s} s:\n"
                         + self._last_lines())

    # process ------------------------------------------------------------------------------

    def up(self, timeout_s=10):
        """Start mosquitto, wait until its TLS port completes a handshake, then (services) start
        the provisioning service and wait until it listens; idempotent.

        After a crash: the port recorded in cloud.json is used again; processes left behind
        (found by their pid files, or by their command line when a pid file is lost) are stopped
        before new ones start: a provisioning service that outlived its broker is replaced, so
        it is never left connected to nothing. A running broker is kept (its devices stay
        connected) and a dead service next to it is started again."""
        started = False
        if not self._broker_running():
            self._stop_strays(timeout_s)
            self._up_broker(timeout_s)
            started = True
        elif self._proc is None:
            self._adopt()
        if self.services and (started or not daemon.service_running(self.state_dir)):
            daemon.stop_service(self.state_dir, timeout_s)  # stale, or lost its pid file
            if not started:
                self._save_service_settings()
            try:
                daemon.start_service(self, timeout_s=max(timeout_s, 20))
            except UpcertError:
                self.down()
                raise
        if self.alpn:
            gate = self._gate()
            if started or not gate.is_running():
                try:
                    self.alpn_port = gate.start(timeout_s)
                except UpcertError:
                    self.down()
                    raise
                saved = self._recorded()
                saved["alpn"], saved["alpn_port"] = True, self.alpn_port
                write_private(self.json_path, json.dumps(saved, indent=1))
        return self

    def _gate(self):
        from upcert.cloud.alpn import AlpnGate

        return AlpnGate(self.state_dir, self.port, self.alpn_port, self.host)

    def _adopt(self):
        """A broker started elsewhere runs: take the settings it was started with (port, host,
        services) from cloud.json; the service's own settings stay this object's."""
        saved = self._recorded()
        self.port = saved.get("port", self.port)
        self.host = saved.get("host", self.host)
        self.alpn = bool(saved.get("alpn", self.alpn))
        self.alpn_port = saved.get("alpn_port", self.alpn_port)
        self.services = bool(saved.get("services", self.services))

    def _save_service_settings(self):
        """Record this object's service settings (fault, validity, quotas) in cloud.json for a
        service started next to a broker that runs already."""
        saved = self._recorded()
        fresh = self._state_json(saved.get("pid"))
        saved.update({k: fresh[k] for k in ("cert_validity", "templates", "fault", "csr_rate",
                                            "csr_burst", "pending_ttl")})
        write_private(self.json_path, json.dumps(saved, indent=1))

    def _stop_strays(self, timeout_s):
        """Stop what a crash may have left of this cloud: the provisioning service (by pid file
        or command line) and any mosquitto started with this folder's mosquitto.conf."""
        daemon.stop_service(self.state_dir, timeout_s)
        for pid in find_processes(self._is_our_broker):
            stop_process(pid, self._is_our_broker, timeout_s)

    def _up_broker(self, timeout_s):
        exe = find_mosquitto()
        for attempt in range(3):
            if self.port is None or (self._auto_port and attempt):
                self.port = free_port(self.host)
            try:
                return self._start(exe, timeout_s)
            except CloudError as e:
                # A port picked by us may be taken between picking and binding: pick again.
                if self._auto_port and "in use" in str(e):
                    continue
                if self._port_recorded and "in use" in str(e):
                    raise CloudError(
                        f"{e}\nport {self.port} is recorded in {self.json_path}: the boards "
                        "provisioned for this cloud dial it. Stop what uses it, or choose "
                        "another port (`upcert cloud up --port N`) and provision the boards "
                        "again") from None
                raise
        raise CloudError(f"no free port found for mosquitto on {self.host}: try again")

    def _start(self, exe, timeout_s):
        self._write_config()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = dict(os.environ, OPENSSL_CONF=str(self._openssl_path))
        fd = os.open(self._out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as out:
            self._proc = subprocess.Popen(
                [exe, "-c", str(self.conf_path.resolve())], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                umask=0o077)
        write_private(self.pid_path, f"{self._proc.pid}\n")
        write_private(self.json_path, json.dumps(self._state_json(self._proc.pid), indent=1))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self.pid_path.unlink(missing_ok=True)
                raise CloudError(f"mosquitto exited with code {self._proc.returncode}:\n"
                                 + self._last_lines())
            if self._handshake_ok():
                return self
            time.sleep(0.05)
        self.down()
        raise CloudError(f"mosquitto did not accept TLS on {self.host}:{self.port} within "
                         f"{timeout_s} s:\n{self._last_lines()}")

    def _handshake_ok(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # probing liveness only
        ctx.load_cert_chain(self.ca.admin_pem, self.ca.admin_key)
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as raw:
                with ctx.wrap_socket(raw):
                    return True
        except OSError:
            return False

    def _last_lines(self, n=15):
        text = self._out_path.read_text(errors="replace") if self._out_path.exists() else ""
        lines = [ln for ln in (text + self.log_text()).splitlines() if "run as root" not in ln]
        return "\n".join(lines[-n:])

    def _pid(self):
        if self._proc is not None:
            return self._proc.pid
        try:
            return int(self.pid_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _is_our_broker(self, pid, args=None):
        """True when pid is a live mosquitto started with this folder's mosquitto.conf."""
        args = args or process_args(pid)
        return bool(args) and "mosquitto" in Path(args[0]).name and \
            process_path_arg(pid, args, "-c") == self.conf_path.resolve()

    def _broker_running(self):
        if self._proc is not None:
            if self._proc.poll() is None:
                return True
            self._proc = None  # ours died (reaped now); the pid file may name a newer one
        pid = self._pid()
        return pid is not None and self._is_our_broker(pid)  # alive, and not a reused pid

    def is_running(self):
        """True while the stand-in runs: our mosquitto lives and, with services, the provisioning
        service too (each checked through /proc: the pid lives and is our process)."""
        if not self._broker_running():
            return False
        return not self.services or daemon.service_running(self.state_dir)

    def status(self):
        """{"running": bool (as is_running), "port", "broker", "broker_pid", "service",
        "service_pid"}: broker and service are "running", "dead" (a pid file names a process
        that is gone or is no longer ours: it crashed or was killed) or "stopped"; service is
        None without services."""
        pid = self._pid()
        broker = "running" if self._broker_running() else "dead" if pid else "stopped"
        service, service_pid = (daemon.service_state(self.state_dir) if self.services
                                else (None, None))
        alpn = (("running" if self._gate().is_running() else "stopped") if self.alpn
                else None)
        return {"running": broker == "running" and service in ("running", None)
                and alpn in ("running", None),
                "port": self.port, "broker": broker, "broker_pid": pid, "service": service,
                "service_pid": service_pid, "alpn": alpn, "alpn_port": self.alpn_port}

    def status_text(self):
        """One line for `upcert cloud status`: "running on localhost:8883", or which part is
        dead or stopped and what to do."""
        st = self.status()
        where = f"{self.endpoint}:{self.port}"
        if st["running"]:
            return f"running on {where}" + (
                f" and {self.endpoint}:{self.alpn_port} (ALPN x-amzn-mqtt-ca)" if self.alpn
                else "")
        if st["broker"] == "stopped" and st["service"] in ("stopped", None):
            return f"stopped (port {self.port})"
        parts = [f"broker {st['broker']}" + (f" (pid {st['broker_pid']})" if st["broker_pid"]
                                              else "") + f" on {where}"]
        if st["service"] is not None:
            parts.append(f"provisioning service {st['service']}" + (
                f" (pid {st['service_pid']}; log {self.state_dir / 'provisioning.log'})"
                if st["service_pid"] else ""))
        if st["alpn"] is not None:
            parts.append(f"port-443 listener (haproxy) {st['alpn']} (port {self.alpn_port})")
        return "; ".join(parts) + ": `upcert cloud up` starts what is missing on the same port"

    def down(self, timeout_s=10):
        """Stop the provisioning service and mosquitto (SIGTERM, then SIGKILL after timeout_s),
        also ones whose pid file is lost; nothing to do if stopped."""
        self._gate().stop(timeout_s)
        daemon.stop_service(self.state_dir, timeout_s)
        pid = self._pid()
        for p in ([pid] if pid else []) + find_processes(self._is_our_broker):
            stop_process(p, self._is_our_broker, timeout_s)
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        self.pid_path.unlink(missing_ok=True)

    def restart(self, timeout_s=10):
        """Stop and start again on the same port (a broker restart as devices see it)."""
        self.down()
        self._auto_port = False
        return self.up(timeout_s)

    def log_text(self):
        """mosquitto's log since this object's last up() (the whole log after load())."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    # clients ------------------------------------------------------------------------------

    def claim_credentials(self, name="batch"):
        """(certificate PEM path, key PEM path) of the claim `name` for provisioning by claim:
        a P-256 key and a certificate from the local CA with CN CLAIM_PREFIX + name, registered
        ACTIVE; made once, under <state>/claims/ (key 0600), then reused: one claim is shared
        by a batch of boards, as on AWS (its key is on every board of the batch, so it can do
        nothing but ask for a board's own certificate)."""
        from upcert.cloud.registry import Registry
        from upcert.pki import certs

        cn = CLAIM_PREFIX + name
        folder = self.state_dir / "claims"
        cert_path, key_path = folder / f"{cn}.cert.pem", folder / f"{cn}.key.pem"
        if cert_path.exists() and key_path.exists():
            return cert_path, key_path
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = certs.generate_key("ec")
        cert = self.ca.issue_device(cn, key.public_key(), days=3650)
        certs.write_private_key(key_path, key)
        Registry(self.registry_path).register(cert, cn, "ACTIVE")
        certs.write_certificate(cert_path, cert)  # last: what says the claim is complete
        return cert_path, key_path

    def tls_context(self, certfile=None, keyfile=None, internal=False):
        """A TLS client context trusting the local CA, presenting certfile/keyfile if given.
        internal: for the host's own services, which also trust the configured server
        certificate itself (it may come from another CA or name another host, as in tests)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(self.ca.ca_pem))
        if internal:
            ctx.check_hostname = False
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a pinned leaf is an anchor
            ctx.load_verify_locations(cafile=str(self.server_cert))
        if certfile:
            ctx.load_cert_chain(str(certfile), str(keyfile))
        return ctx

    def client(self, client_id, certfile, keyfile, timeout_s=10, protocol=mqtt.MQTTv311,
               internal=False):
        """A paho client connected over TLS with the given identity, network loop started."""
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        c.tls_set_context(self.tls_context(certfile, keyfile, internal))
        done, result = threading.Event(), []

        def on_connect(client, userdata, flags, reason_code, properties):
            result.append(reason_code)
            done.set()

        c.on_connect = on_connect
        try:
            c.connect(self.endpoint, self.port, keepalive=60)
        except (OSError, ssl.SSLError) as e:
            raise CloudError(f"cannot connect to {self.endpoint}:{self.port} as {client_id}: {e}"
                             " (is the cloud up? `upcert cloud up`)") from None
        c.loop_start()
        if not done.wait(timeout_s) or result[0].is_failure:
            c.loop_stop()
            c.disconnect()
            why = result[0] if result else f"no CONNACK within {timeout_s} s"
            raise CloudError(f"broker refused {client_id}: {why}")
        return c

    def admin_client(self, client_id=None, timeout_s=10, internal=False):
        """A paho client connected as upcert-admin (may read and write every topic); internal
        as for tls_context."""
        client_id = client_id or f"upcert-admin-{uuid.uuid4().hex[:8]}"
        return self.client(client_id, self.ca.admin_pem, self.ca.admin_key, timeout_s,
                           internal=internal)


class Subscription:
    """Collects messages on topic with an admin client; subscribes on construction.

    wait_for(predicate, timeout_s) hands out each matching message once, oldest first.
    """

    def __init__(self, cloud, topic, qos=1, timeout_s=10):
        self.topic = topic
        self.messages = []  # every message received, in order
        self._pending = []
        self._cond = threading.Condition()
        self._client = cloud.admin_client()
        self._client.on_message = self._on_message
        subscribed, codes = threading.Event(), []

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            codes.extend(reason_codes)
            subscribed.set()

        self._client.on_subscribe = on_subscribe
        self._client.subscribe(topic, qos)
        if not subscribed.wait(timeout_s) or codes[0].is_failure:
            self.close()
            why = codes[0] if codes else f"no SUBACK within {timeout_s} s"
            raise CloudError(f"cannot subscribe to {topic}: {why}")

    @property
    def client(self):
        """The connected admin client (to publish commands, for instance)."""
        return self._client

    def _on_message(self, client, userdata, message):
        with self._cond:
            self.messages.append(message)
            self._pending.append(message)
            self._cond.notify_all()

    def wait_for(self, predicate=None, timeout_s=10):
        """The first not yet returned message for which predicate(message) is true."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for m in self._pending:
                    if predicate is None or predicate(m):
                        self._pending.remove(m)
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = ", ".join(sorted({m.topic for m in self.messages})) or "none"
                    raise CloudError(f"no matching message on {self.topic} within {timeout_s} s "
                                     f"({len(self.messages)} received; topics: {seen})")
                self._cond.wait(left)

    def close(self):
        """Disconnect the subscriber."""
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

