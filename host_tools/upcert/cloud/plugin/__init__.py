"""Broker-side enforcement for the local AWS IoT stand-in: builds the mosquitto identity plugin
(upcert_identity.c) and writes the CRL that makes mosquitto refuse certificates that are not
ACTIVE in the registry.
"""

import datetime
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from upcert.errors import UpcertError
from upcert.paths import ROOT
from upcert.pki.certs import load_private_key

SOURCE = Path(__file__).with_name("upcert_identity.c")
BUILD_DIR = ROOT / ".build" / "plugin"
CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror")
LIBS = ("-lcrypto",)
# Headers: mosquitto_broker.h, mosquitto_plugin.h (Debian mosquitto-dev), mosquitto.h
# (libmosquitto-dev), openssl/*.h (libssl-dev).
_HEADER_PACKAGES = {"mosquitto_broker.h": "mosquitto-dev", "mosquitto_plugin.h": "mosquitto-dev",
                    "mosquitto.h": "libmosquitto-dev", "openssl/": "libssl-dev"}
CRL_DAYS = 3650  # mosquitto refuses every client once the CRL's nextUpdate has passed
_BACKDATE = datetime.timedelta(minutes=5)


class PluginError(UpcertError):
    """The identity plugin cannot be built."""


def build_plugin(out_dir=None, cc=None):
    """Path of upcert_identity.so, compiled with gcc when missing or built from other source."""
    out_dir = Path(out_dir or BUILD_DIR)
    cc = cc or shutil.which("gcc") or shutil.which("cc")
    src = SOURCE.read_bytes()
    stamp = hashlib.sha256(src + " ".join(CFLAGS + LIBS).encode()).hexdigest()
    out, stamp_path = out_dir / "upcert_identity.so", out_dir / "upcert_identity.sha256"
    if out.exists() and stamp_path.exists() and stamp_path.read_text().strip() == stamp:
        return out
    if not cc:
        raise PluginError("gcc not found: it builds the broker's identity plugin; run `make "
                          "setup` (apt-get install gcc mosquitto-dev libmosquitto-dev libssl-dev)")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".upcert_identity.{os.getpid()}.so"  # parallel builds never clash
    try:
        proc = subprocess.run([cc, *CFLAGS, "-o", str(tmp), str(SOURCE), *LIBS],
                              capture_output=True, text=True)
    except OSError as e:
        raise PluginError(f"cannot run the C compiler {cc}: {e.strerror}: run `make setup` "
                          "(apt-get install gcc)") from None
    if proc.returncode:
        tmp.unlink(missing_ok=True)
        missing = [pkg for header, pkg in _HEADER_PACKAGES.items()
                   if f"{header}" in proc.stderr and "No such file" in proc.stderr]
        hint = (f"install the headers: apt-get install {' '.join(sorted(set(missing)))}"
                if missing else "see the compiler output above")
        raise PluginError(f"cannot build {SOURCE.name}:\n{proc.stderr.strip()}\n{hint}")
    os.replace(tmp, out)
    stamp_path.write_text(stamp + "\n")
    return out


def write_crl(ca, revocations, path, now=None):
    """Write a CRL signed by the local CA listing revocations [(serial, status, changed_at)];
    written to a temporary file and renamed, so mosquitto never reads half a file."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca.certificate.subject)
               .last_update(now - _BACKDATE)
               .next_update(now + datetime.timedelta(days=CRL_DAYS))
               # RFC 5280 §5.2.3: a CRL number that grows with each CRL
               .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False))
    for serial, status, changed_at in revocations:
        when = datetime.datetime.fromtimestamp(changed_at, datetime.timezone.utc)
        entry = (x509.RevokedCertificateBuilder().serial_number(serial)
                 .revocation_date(min(when, now)))
        if status != "REVOKED":  # INACTIVE, PENDING_ACTIVATION: may come back (RFC 5280 §5.3.1)
            entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags.certificate_hold),
                                        critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign(load_private_key(ca.ca_key), hashes.SHA256())
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path
