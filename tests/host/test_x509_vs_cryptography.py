"""upcert.x509 (run by the MicroPython unix port) against pyca/cryptography's view of the same
certificates: many generated ones (key types, hashes, PSS, UTCTime/GeneralizedTime, long serials,
missing CN, string types) plus the system CA bundle; one micropython process parses them all."""

import calendar
import datetime as dt
import hashlib
import json
import os
import random
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from upcert.pki.algorithms import AWS_SIGNATURE_OIDS as AWS_NAMES  # noqa: E402

from tests.tools import ROOT, micropython_cmd

UTC = dt.timezone.utc
# Some system roots carry a negative serial; cryptography warns, we compare them anyway.
pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
SHA256 = hashes.SHA256()

# Runs under MicroPython: parse every file listed in argv[1], print one JSON line each.
SCRIPT = r"""
import sys, gc, json, hashlib
from binascii import hexlify
from upcert import der, x509
from upcert.errors import CertificateError
def span(c, i):  # x509.Certificate._at: offsets of what path validation reads (see x509.py)
    return memoryview(c.der)[c._at[i] : c._at[i + 1]]
listing = open(sys.argv[1])
for line in listing:
    path = line.strip()
    with open(path, "rb") as f:
        data = f.read()
    try:
        c = x509.load(data)
        r = {"serial": c.serial, "subject_cn": c.subject_cn, "issuer_cn": c.issuer_cn,
             "not_before": c.not_before, "not_after": c.not_after,
             "not_before_tuple": c.not_before_tuple, "not_after_tuple": c.not_after_tuple,
             "key_type": c.key_type, "key_bits": c.key_bits,
             "public_key": hexlify(c.public_key).decode(), "sig_alg": c.sig_alg,
             "sig_alg_aws_ok": c.sig_alg_aws_ok, "cert_id": c.cert_id(),
             "ski": c.ski and hexlify(c.ski).decode(), "aki": c.aki and hexlify(c.aki).decode(),
             "key_exp": c.key_exp,
             "tbs_sha256": hexlify(hashlib.sha256(span(c, 0)).digest()).decode(),
             "issuer_der": hexlify(span(c, 4)).decode(),
             "subject_der": hexlify(span(c, 6)).decode(),
             "extensions": [[der.read_oid(o, 0, len(o)), k, hexlify(v).decode()]
                            for o, k, v in c.extensions()]}
    except CertificateError as exc:
        r = {"error": "CertificateError", "message": str(exc)}
    except Exception as exc:
        r = {"error": type(exc).__name__, "message": str(exc)}
    r["path"] = path
    print(json.dumps(r))
    c = data = None
    gc.collect()
"""


def _name(cn, string_type=None, extra=True):
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "upcert tests")] if extra else []
    if cn is not None:
        if string_type is None:
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        else:
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn, _type=string_type))
    return x509.Name(attrs)


def _cert(
    subject_key,
    signer,
    *,
    cn="dev",
    issuer_cn="upcert CA",
    serial=1,
    nb=(2026, 1, 1),
    na=(2027, 1, 1),
    hash_=SHA256,
    pss=False,
    string_type=None,
):
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, string_type))
        .issuer_name(_name(issuer_cn, extra=False))
        .public_key(subject_key.public_key())
        .serial_number(serial)
        .not_valid_before(dt.datetime(*nb, tzinfo=UTC))
        .not_valid_after(dt.datetime(*na, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if pss:
        pad = padding.PSS(mgf=padding.MGF1(hash_), salt_length=padding.PSS.DIGEST_LENGTH)
        return b.sign(signer, hash_, rsa_padding=pad)
    return b.sign(signer, hash_)


@pytest.fixture(scope="module")
def keys():
    return {
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "rsa2048": rsa.generate_private_key(65537, 2048),
        "rsa3072": rsa.generate_private_key(65537, 3072),
        "dsa": dsa.generate_private_key(2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }


def _generated(keys):
    k = keys
    rng = random.Random(5280)
    certs = []
    for subj in ("p256", "p384", "rsa2048", "rsa3072"):
        for signer in ("p256", "p384", "rsa2048"):
            for h in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
                certs.append(_cert(k[subj], k[signer], hash_=h, serial=rng.getrandbits(64) + 1))
    for h in (hashes.SHA256(), hashes.SHA512()):
        certs.append(_cert(k["p256"], k["rsa3072"], pss=True, hash_=h))
    certs.append(_cert(k["p256"], k["dsa"]))  # DSA_WITH_SHA256
    certs.append(_cert(k["ed25519"], k["ed25519"], hash_=None))  # unknown to AWS: OIDs
    certs.append(_cert(k["p521"], k["p384"], hash_=hashes.SHA384()))
    certs.append(_cert(k["p256"], k["rsa2048"], hash_=hashes.SHA224()))
    # Dates: UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5), 9999 (no expiry).
    for nb, na in (
        ((1950, 1, 1), (2049, 12, 31, 23, 59, 59)),
        ((2049, 12, 31, 23, 59, 59), (2050, 1, 1)),
        ((1999, 12, 31, 23, 59, 59), (2000, 1, 1)),
        ((2026, 11, 1), (2106, 2, 7, 6, 28, 16)),
        ((2000, 2, 29, 12, 30, 45), (9999, 12, 31, 23, 59, 59)),
    ):
        certs.append(_cert(k["p256"], k["p256"], nb=nb, na=na))
    # Serials: smallest, high bit set (needs a pad byte), 20 bytes (RFC 5280 §4.1.2.2 maximum).
    for serial in (1, 0x80, 0xFF, 0x8000000000000000, (1 << 159) - 1, rng.getrandbits(159) | 1):
        certs.append(_cert(k["p256"], k["p256"], serial=serial))
    # Names: no CN, CN only in issuer, non-ASCII, string types.
    certs.append(_cert(k["p256"], k["p256"], cn=None))
    certs.append(_cert(k["p256"], k["p256"], cn=None, issuer_cn=None))
    certs.append(_cert(k["p256"], k["p256"], cn="d\u00e9vice-\u6771\u4eac-\U0001f600"))
    for st, cn in (
        (_ASN1Type.PrintableString, "dev 1"),
        (_ASN1Type.IA5String, "dev@x"),
        (_ASN1Type.BMPString, "b\u00e9mp"),
        (_ASN1Type.UniversalString, "u\U0001f600"),
        (_ASN1Type.T61String, "t61"),
    ):
        certs.append(_cert(k["p256"], k["p256"], cn=cn, string_type=st))
    certs.append(_cert(k["p256"], k["p256"], cn="x" * 64))
    return certs


def _system_roots():
    folder = Path("/etc/ssl/certs")
    seen, out = set(), []
    for p in sorted(folder.glob("*.pem")):
        real = p.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            out.append(x509.load_pem_x509_certificate(real.read_bytes()))
        except ValueError:
            continue
    return out


def _last_cn(name):
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return cns[-1].value if cns else None


def _serial_hex(n):
    # The INTEGER's content octets in hex without leading zeros: format(n, "x") for the positive
    # serials RFC 5280 §4.1.2.2 requires; two's complement for the odd negative one in the wild.
    if n >= 0:
        return format(n, "x")
    raw = n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)
    return raw.hex().lstrip("0") or "0"


def _expected(c):
    der = c.public_bytes(serialization.Encoding.DER)
    pk = c.public_key()
    if isinstance(pk, ec.EllipticCurvePublicKey):
        key_type, bits = "EC", pk.curve.key_size
        pub = pk.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    elif isinstance(pk, rsa.RSAPublicKey):
        key_type, bits = "RSA", pk.key_size
        pub = pk.public_numbers().n.to_bytes((pk.key_size + 7) // 8, "big")
    else:
        key_type, bits = c.public_key_algorithm_oid.dotted_string, None
        pub = pk.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    oid = c.signature_algorithm_oid.dotted_string
    nb, na = c.not_valid_before_utc, c.not_valid_after_utc
    return {
        "serial": _serial_hex(c.serial_number),
        "subject_cn": _last_cn(c.subject),
        "issuer_cn": _last_cn(c.issuer),
        "not_before": calendar.timegm(nb.utctimetuple()),
        "not_after": calendar.timegm(na.utctimetuple()),
        "not_before_tuple": list(nb.utctimetuple()[:6]),
        "not_after_tuple": list(na.utctimetuple()[:6]),
        "key_type": key_type,
        "key_bits": bits,
        "public_key": pub.hex(),
        "sig_alg": AWS_NAMES.get(oid, oid),
        "sig_alg_aws_ok": oid in AWS_NAMES,
        "cert_id": hashlib.sha256(der).hexdigest(),
        "ski": _ext(c, x509.SubjectKeyIdentifier, "digest"),
        "aki": _ext(c, x509.AuthorityKeyIdentifier, "key_identifier"),
        # What path validation (upcert.chain) reads.
        "key_exp": pk.public_numbers().e if isinstance(pk, rsa.RSAPublicKey) else None,
        "tbs_sha256": hashlib.sha256(c.tbs_certificate_bytes).hexdigest(),
        "issuer_der": c.issuer.public_bytes().hex(),
        "subject_der": c.subject.public_bytes().hex(),
        # extnValue as cryptography re-encodes it: the same bytes for the certificates it made,
        # not always for the system roots (string types, key usage bits): see _ext_values_ok.
        "extensions": [[e.oid.dotted_string, e.critical, e.value.public_bytes().hex()]
                       for e in c.extensions],
    }


def _ext_values_ok(have, want, der, exact):
    # Same OIDs and criticality in order; each value is the certificate's own bytes (exact:
    # equal to cryptography's encoding too).
    if [e[:2] for e in have or []] != [e[:2] for e in want]:
        return False
    return all(bytes.fromhex(h[2]) in der and (not exact or h[2] == w[2])
               for h, w in zip(have, want, strict=True))


def _ext(c, kind, field):
    # The key identifier of extension `kind` as hex, None when absent.
    try:
        v = getattr(c.extensions.get_extension_for_class(kind).value, field)
    except x509.ExtensionNotFound:
        return None
    return v.hex() if v is not None else None


def _run(tmp_path, files):
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(str(f) for f in files))
    script = tmp_path / "parse_all.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
    # A non-UTC zone: the unix port's time.mktime is local time; our conversion must not be.
    env["TZ"] = "America/New_York"
    proc = subprocess.run(
        micropython_cmd(heapsize="96K") + [str(script), str(listing)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == len(files), proc.stdout[-2000:]
    return {r.pop("path"): r for r in rows}


def test_fields_match_cryptography(tmp_path, keys):
    certs = [(f"gen{i}", c) for i, c in enumerate(_generated(keys))]
    roots = _system_roots()
    assert len(roots) > 50, "no CA bundle in /etc/ssl/certs: apt-get install ca-certificates"
    certs += [(f"sys{i}", c) for i, c in enumerate(roots)]
    files = []
    for name, c in certs:
        # Alternate DER and PEM so x509.load() sees both.
        enc, ext = (
            (serialization.Encoding.PEM, "pem")
            if len(files) % 2
            else (serialization.Encoding.DER, "der")
        )
        path = tmp_path / f"{name}.{ext}"
        path.write_bytes(c.public_bytes(enc))
        files.append(path)
    got = _run(tmp_path, files)
    mismatches = []
    for path, (name, c) in zip(files, certs, strict=True):
        want, have = _expected(c), dict(got[str(path)])
        der_bytes = c.public_bytes(serialization.Encoding.DER)
        if _ext_values_ok(have.get("extensions"), want["extensions"], der_bytes,
                          name.startswith("gen")):
            have["extensions"] = want["extensions"]
        if have != want:
            diff = {
                k: (have.get(k), want.get(k))
                for k in set(want) | set(have)
                if have.get(k) != want.get(k)
            }
            mismatches.append(f"{name} ({c.subject.rfc4514_string()}): {diff}")
    assert not mismatches, "\n".join(mismatches[:20])
    assert any(c.not_valid_after_utc.year >= 2050 for _, c in certs)
    assert {"Amazon Root CA 1", "Amazon Root CA 3"} <= {got[str(p)]["subject_cn"] for p in files}


def test_malformed_only_certificate_error(tmp_path, keys):
    # Truncations and byte flips of real certificates: anything but a CertificateError is a bug.
    rng = random.Random(690)
    base = [c.public_bytes(serialization.Encoding.DER) for c in _generated(keys)[:12]]
    files = []
    for i in range(300):
        data = bytearray(rng.choice(base))
        if i % 3 == 0:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / f"bad{i}.der"
        path.write_bytes(bytes(data))
        files.append(path)
    got = _run(tmp_path, files)
    crashes = {p: r for p, r in got.items() if r.get("error") not in (None, "CertificateError")}
    assert not crashes, crashes
    assert sum(1 for r in got.values() if r.get("error")) >= 100  # the mutations do bite
