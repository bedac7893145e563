"""`upcert cert inspect` (host_tools/upcert/inspect.py): the host view (cryptography) and the
device view (firmware/upcert/x509.py on the MicroPython unix port) agree on varied certificates,
carry the right values, and malformed files end as one clear error line."""

import datetime as dt
import hashlib
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from upcert import cli
from upcert.errors import UpcertError
from upcert.pki import certs
from upcert.pki.inspect import inspect_device, inspect_file, inspect_host

from tests.fuzz import gencert
from tests.fuzz.make_corpus import cert
from tests.tools import require

DER, PEM = serialization.Encoding.DER, serialization.Encoding.PEM


@pytest.fixture(scope="module", autouse=True)
def _unix_port():
    require("micropython")  # --device runs it: skip without it, fail under CI=true


@pytest.fixture(scope="module")
def keys():
    return {
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "k256": ec.generate_private_key(ec.SECP256K1()),
        "rsa2048": rsa.generate_private_key(65537, 2048),
        "rsa4096": rsa.generate_private_key(65537, 4096),
        "dsa": dsa.generate_private_key(2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }


def _varied(k):
    """(label, certificate, expected public_key, expected signature name)."""
    sha384, sha512 = hashes.SHA384(), hashes.SHA512()
    return [
        ("EC P-256", cert(k["p256"], k["p256"]), ("EC", 256, "P-256"), "ECDSA-WITH-SHA256"),
        ("EC P-384", cert(k["p384"], k["p384"], hash_=sha384), ("EC", 384, "P-384"),
         "ECDSA-WITH-SHA384"),
        ("EC P-521", cert(k["p521"], k["p384"], hash_=sha512), ("EC", 521, "P-521"),
         "ECDSA-WITH-SHA512"),
        ("RSA 2048", cert(k["rsa2048"], k["rsa2048"]), ("RSA", 2048), "SHA256WITHRSA"),
        ("RSA 4096", cert(k["rsa4096"], k["rsa2048"], hash_=sha512), ("RSA", 4096),
         "SHA512WITHRSA"),
        ("RSA-PSS", cert(k["p256"], k["rsa4096"], pss=True, hash_=sha384), ("EC", 256, "P-256"),
         "RSASSAPSS"),
        ("2050+", cert(k["p256"], k["rsa2048"], nb=(2049, 12, 31, 23, 59, 59), na=(2050, 1, 1)),
         ("EC", 256, "P-256"), "SHA256WITHRSA"),
        ("9999", cert(k["rsa2048"], k["p256"], nb=(1950, 1, 1), na=(9999, 12, 31, 23, 59, 59),
                      serial=(1 << 159) - 1), ("RSA", 2048), "ECDSA-WITH-SHA256"),
        ("DSA signer, no CN", cert(k["p256"], k["dsa"], cn=None), ("EC", 256, "P-256"),
         "DSA_WITH_SHA256"),
        ("Ed25519", cert(k["ed25519"], k["ed25519"], hash_=None, issuer=None),
         ("1.3.101.112", None), "1.3.101.112"),
        ("secp256k1 (unknown to the device)", cert(k["k256"], k["p256"]), ("EC", None, None),
         "ECDSA-WITH-SHA256"),
        ("names", cert(k["p256"], k["p256"], cn="d\u00e9v-\u6771\u4eac-\U0001f600\t\"\\"),
         ("EC", 256, "P-256"), "ECDSA-WITH-SHA256"),
    ]


def _key(t):
    return dict(zip(("type", "bits", "curve"), t, strict=False))


def test_host_and_device_views_agree(keys, tmp_path):
    for i, (label, c, key, sig) in enumerate(_varied(keys)):
        der = c.public_bytes(DER)
        host = inspect_host(der)
        want = {
            "serial": format(c.serial_number, "x"),
            "not_before": c.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "not_after": c.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "public_key": _key(key),
            "signature_algorithm": sig,
            "aws_accepts_signature": not sig[0].isdigit(),
            "certificate_id": hashlib.sha256(der).hexdigest(),
        }
        assert {k: host[k] for k in want} == want, label
        enc, ext = ((DER, "der"), (PEM, "pem"))[i % 2]  # the device reads both encodings
        path = tmp_path / f"c{i}.{ext}"
        path.write_bytes(c.public_bytes(enc))
        assert inspect_file(path, device=True) == host, label
        assert inspect_file(path) == host, label
    assert host["subject_cn"] == "d\u00e9v-\u6771\u4eac-\U0001f600\t\"\\"


def test_amazon_roots_and_a_bundle(tmp_path):
    bundle = tmp_path / "roots.pem"
    names = ("Amazon_Root_CA_1", "Amazon_Root_CA_3")
    bundle.write_bytes(b"".join(open(f"/etc/ssl/certs/{n}.pem", "rb").read() for n in names))
    host, device = inspect_file(bundle), inspect_device(bundle.read_bytes(), str(bundle))
    assert host == device
    assert host["subject_cn"] == "Amazon Root CA 1"
    assert host["public_key"] == {"type": "RSA", "bits": 2048}
    assert host["note"] == "the file holds 2 certificates; this view is of the first"
    # Concatenated DER, as the board's /upcert.d/roots.der holds them.
    roots = [x509.load_pem_x509_certificate(open(f"/etc/ssl/certs/{n}.pem", "rb").read())
             for n in reversed(names)]
    der = tmp_path / "roots.der"
    der.write_bytes(b"".join(r.public_bytes(DER) for r in roots))
    view = inspect_file(der, device=True)
    assert view == inspect_file(der)
    assert view["public_key"] == {"type": "EC", "bits": 256, "curve": "P-256"}
    assert "2 certificates" in view["note"]


def _error(path, device):
    with pytest.raises(UpcertError) as exc:
        inspect_file(path, device=device)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_malformed_files_give_one_clear_error(keys, tmp_path):
    der = cert(keys["p256"], keys["p256"]).public_bytes(DER)
    cases = {
        "truncated.der": (der[:200], "truncated at byte 4: length"),
        "trailing.der": (der + b"\x00\x00", "trailing bytes at byte %d" % len(der)),
        "indefinite.der": (b"\x30\x80" + der[4:] + b"\x00\x00", "indefinite length at byte 1"),
        "junk.pem": (b"-----BEGIN CERTIFICATE-----\nMIIBQUJ\n-----END CERTIFICATE-----\n",
                     "PEM CERTIFICATE: bad base64"),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert reason in _error(path, True), name
        assert "not a valid X.509 certificate" in _error(path, False), name
    assert "no such file" in _error(tmp_path / "missing.pem", True)
    (tmp_path / "empty.der").write_bytes(b"")
    assert "empty" in _error(tmp_path / "empty.der", False)
    (tmp_path / "csr.pem").write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END "
                                       b"CERTIFICATE REQUEST-----\n")
    assert "without a '-----BEGIN CERTIFICATE-----' block" in _error(tmp_path / "csr.pem", True)


def test_key_file_is_refused_without_echoing_it(keys, tmp_path):
    path = tmp_path / "key.pem"
    certs.write_private_key(path, keys["p256"])
    body = [ln for ln in path.read_text().splitlines() if not ln.startswith("-----")]
    for device in (False, True):
        msg = _error(path, device)
        assert "holds a private key, not a certificate" in msg
        assert not any(line[:16] in msg for line in body)


def test_cli_prints_json_or_one_line(keys, tmp_path, capsys):
    c = cert(keys["p384"], keys["p256"], cn="dev-7", serial=0xABCDEF, na=(2051, 6, 30))
    path = tmp_path / "dev.pem"
    path.write_bytes(c.public_bytes(PEM))
    for argv in (["cert", "inspect", str(path)], ["cert", "inspect", str(path), "--device"]):
        assert cli.main(argv) == 0
        view = json.loads(capsys.readouterr().out)
        assert view["subject_cn"] == "dev-7" and view["serial"] == "abcdef"
        assert view["not_after"] == "2051-06-30T00:00:00Z"
        assert view["public_key"] == {"type": "EC", "bits": 384, "curve": "P-384"}
    (tmp_path / "bad.der").write_bytes(b"\x30\x03\x02\x01")
    assert cli.main(["cert", "inspect", str(tmp_path / "bad.der"), "--device"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("upcert: ") and "truncated at byte" in err
    assert dt.datetime(2051, 6, 30, tzinfo=dt.timezone.utc) == c.not_valid_after_utc


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(gencert.certificates())
def test_random_certificates_same_view(cert_label):
    c, label = cert_label
    der = c.public_bytes(DER)
    assert inspect_device(der) == inspect_host(der), label
