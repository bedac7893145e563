"""`upcert cert inspect`: a certificate's view as JSON, read by pyca/cryptography on the host or
by the device's own reader (firmware/upcert/x509.py) on the MicroPython unix port; both views
have the same keys and, for every certificate the device can read, the same values.
"""

import ast
import os
import re
import subprocess
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from upcert.paths import FIRMWARE, find_micropython
from upcert.pki.certs import AWS_SIGNATURE_ALGORITHMS, CertError, _split_der, cert_id

# Curves the device's reader knows (x509._CURVES), by the names AWS and NIST use.
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_CURVE_BITS = {256: "P-256", 384: "P-384", 521: "P-521"}
_EC_OID = "1.2.840.10045.2.1"
_RSA_OIDS = ("1.2.840.113549.1.1.1", "1.2.840.113549.1.1.10")  # rsaEncryption, RSASSA-PSS
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)
DEVICE_HEAP = "96K"  # about the free heap of an ESP32 running the agent
DEVICE_TIMEOUT_S = 60

# Runs under MicroPython: the device's own view, hostcalls.certificate_view (the function a host
# can also call on a board), of the file argv[1]; prints it as one Python literal.
_DEVICE_SCRIPT = r"""
import sys
from upcert.hostcalls import certificate_view
def _read(path):
    with open(path, "rb") as f:
        return f.read()
print(repr(certificate_view(_read(sys.argv[1]))))
"""


def _iso(t):
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % tuple(t)


def _view(subject_cn, issuer_cn, serial, not_before, not_after, key, sig_alg, aws_ok, cid, count):
    out = {
        "subject_cn": subject_cn,
        "issuer_cn": issuer_cn,
        "serial": serial,
        "not_before": _iso(not_before),
        "not_after": _iso(not_after),
        "public_key": key,
        "signature_algorithm": sig_alg,
        "aws_accepts_signature": aws_ok,
        "certificate_id": cid,
    }
    if count > 1:
        out["note"] = f"the file holds {count} certificates; this view is of the first"
    return out


def _key(key_type, bits):
    # As far as the device reader knows: RSA modulus bits; EC bits and curve on the NIST curves.
    if key_type == "EC":
        return {"type": "EC", "bits": bits, "curve": _CURVE_BITS.get(bits)}
    return {"type": key_type, "bits": bits}


def _not_pem_cert(data, label):
    if b"PRIVATE KEY-----" in data:  # never echo anything from a key file
        return CertError(f"{label}: holds a private key, not a certificate: pass the certificate")
    return CertError(f"{label}: PEM without a '-----BEGIN CERTIFICATE-----' block")


def _last_cn(name):
    # The last (most specific) CN, as the device takes it. cryptography reads T61String as
    # UTF-8; the device, like OpenSSL, as Latin-1: show what the device shows.
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns:
        return None
    if cns[-1]._type == _ASN1Type.T61String:
        return cns[-1].value.encode("utf-8").decode("latin-1")
    return cns[-1].value


def _serial_hex(n):
    # The INTEGER's content octets in hex without leading zeros (two's complement if negative).
    if n >= 0:
        return format(n, "x")
    return n.to_bytes(((~n).bit_length() + 8) // 8, "big", signed=True).hex().lstrip("0") or "0"


def _host_key(cert):
    oid = cert.public_key_algorithm_oid.dotted_string
    if oid not in (_EC_OID, *_RSA_OIDS):
        return _key(oid, None)
    try:
        pk = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        pk = None
    if isinstance(pk, rsa.RSAPublicKey):
        return _key("RSA", pk.key_size)
    if isinstance(pk, ec.EllipticCurvePublicKey) and pk.curve.name in _CURVES:
        return _key("EC", pk.curve.key_size)
    return _key("EC" if oid == _EC_OID else "RSA", None)


def inspect_host(data, label="<data>"):
    """The view of the first certificate in `data` (PEM or DER bytes) as pyca/cryptography
    reads it. Raises CertError (an UpcertError) naming what is wrong."""
    data = bytes(data)
    try:
        if data[:1] != b"\x30" and b"-----BEGIN" in data:
            blocks = _PEM_BLOCK.findall(data)
            if not blocks:
                raise _not_pem_cert(data, label)
            count = len(blocks)
            cert = x509.load_pem_x509_certificate(data[data.index(b"-----BEGIN CERTIFICATE"):])
        else:
            parts = _split_der(data) or [data]
            count = len(parts)
            cert = x509.load_der_x509_certificate(parts[0])
        nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
        view = _view(_last_cn(cert.subject), _last_cn(cert.issuer), _serial_hex(cert.serial_number),
                     nb.timetuple()[:6], na.timetuple()[:6], _host_key(cert),
                     AWS_SIGNATURE_ALGORITHMS.get(cert.signature_algorithm_oid,
                                                  cert.signature_algorithm_oid.dotted_string),
                     cert.signature_algorithm_oid in AWS_SIGNATURE_ALGORITHMS, cert_id(cert), count)
    except ValueError as exc:  # cryptography's parse errors; names and keys decode lazily
        raise CertError(f"{label}: not a valid X.509 certificate ({exc}); "
                        "`--device` names the byte where the device reader stops") from None
    return view


def inspect_device(data, label="<data>"):
    """The view of the first certificate in `data` as the device's reader sees it: upcert.x509
    from firmware/ running on the MicroPython unix port (one process, a board-sized heap).
    Raises CertError with the device reader's reason when it refuses the data."""

    data = bytes(data)
    if data[:1] != b"\x30" and b"-----BEGIN" in data and not _PEM_BLOCK.search(data):
        raise _not_pem_cert(data, label)
    with tempfile.TemporaryDirectory(prefix="upcert-inspect-") as tmp:
        script, cert = Path(tmp) / "inspect_device.py", Path(tmp) / "cert.bin"
        script.write_text(_DEVICE_SCRIPT)
        cert.write_bytes(data)
        env = dict(os.environ, MICROPYPATH=str(FIRMWARE))
        cmd = [find_micropython(), "-X", f"heapsize={DEVICE_HEAP}", str(script), str(cert)]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=DEVICE_TIMEOUT_S, env=env)
        except subprocess.TimeoutExpired:
            raise CertError(f"{label}: the device reader did not answer within "
                            f"{DEVICE_TIMEOUT_S} s (a bug: please report it)") from None
    # split("\n"), not splitlines(): a CN may hold U+2028 or U+0085, which JSON leaves raw.
    lines = proc.stdout.decode("utf-8", "replace").strip().split("\n")
    if proc.returncode or not lines[-1]:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise CertError(f"{label}: the device reader crashed (a bug: please report it): {tail[0]}")
    try:
        r = ast.literal_eval(lines[-1])
    except (ValueError, SyntaxError):
        raise CertError(f"{label}: the device reader's answer makes no sense (a bug: please "
                        f"report it): {lines[-1][:120]!r}") from None
    if r.get("error") == "out of memory":
        raise CertError(f"{label}: the device reader refuses it: out of memory on a "
                        f"{DEVICE_HEAP} heap")
    if "error" in r:
        raise CertError(f"{label}: the device reader refuses it: {r['error']}")
    return _view(r["subject_cn"], r["issuer_cn"], r["serial"], r["not_before"], r["not_after"],
                 _key(r["key_type"], r["key_bits"]), r["sig_alg"], r["sig_alg_aws_ok"],
                 r["cert_id"], r["count"])


def inspect_file(path, device=False):
    """inspect_device or inspect_host on a file; CertError when it cannot be read."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise CertError(f"{p}: no such file") from None
    except OSError as exc:
        raise CertError(f"{p}: cannot read ({exc.strerror})") from None
    if not data:
        raise CertError(f"{p}: the file is empty")
    return (inspect_device if device else inspect_host)(data, str(p))

