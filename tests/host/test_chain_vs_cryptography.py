"""upcert.chain (run by the MicroPython unix port) on certificate chains made with pyca/cryptography:
RSA root -> intermediate -> leaf (as Amazon Root CA 1's), P-256 root -> leaf (as Amazon Root CA
3's), RSA-PSS and SHA-384/512 signatures; then each way a chain must be refused, with the TLS alert
(RFC 5246 §7.2.2) the client would send; also ServerKeyExchange signatures, mutants and the real
Amazon roots. Each test runs one micropython process for all its cases."""

import datetime as dt
import ipaddress
import json
import os
import random
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from tests.tools import ROOT, micropython_cmd, missing

UTC = dt.timezone.utc
SHA256 = hashes.SHA256()
NOW = (2027, 6, 1, 12, 0, 0)
HOST = "abc123-ats.iot.eu-west-1.example.com"
OK, BAD, UNSUPPORTED, EXPIRED, UNKNOWN, UNKNOWN_CA = None, 42, 43, 45, 46, 48
SERVER, CLOCK = 5, 7  # upcert.errors reason codes

# Runs under MicroPython: verify each case of argv[1] (a JSON object a line), print one JSON line
# per case.
SCRIPT = r"""
import sys, gc, json
from upcert import chain
from upcert.clock import utc_seconds

def read(path):
    with open(path, "rb") as f:
        return f.read()

for line in open(sys.argv[1]):
    case = json.loads(line)
    name = case["name"]
    certs = [read(p) for p in case["chain"]]
    roots = [read(p) for p in case["roots"]]
    r = {"name": name}
    try:
        leaf = chain.verify(certs, roots, case["host"], utc_seconds(case["now"]),
                            case.get("trusted", True))
        r["ok"] = leaf.subject_cn
    except chain.ChainError as exc:
        r.update(alert=exc.alert, reason=exc.reason, message=str(exc))
    except Exception as exc:
        r.update(error=type(exc).__name__, message=str(exc))
    print(json.dumps(r))
    certs = roots = leaf = case = None
    gc.collect()
"""


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "upcert tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ku(**bits):
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: bits.get(n, False) for n in names})


CA_KU = _ku(key_cert_sign=True, crl_sign=True, digital_signature=True)
LEAF_KU = _ku(digital_signature=True, key_encipherment=True)
SERVER_EKU = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
UNKNOWN_OID = ObjectIdentifier("1.3.6.1.4.1.55555.1.2")


class Node:
    """A certificate and its private key."""

    def __init__(self, cert, key):
        self.cert, self.key = cert, key
        self.der = cert.public_bytes(serialization.Encoding.DER)


def make(cn, key, issuer=None, *, ca=False, path_len=None, ku="default", eku="default",
         san=None, nb=(2026, 1, 1), na=(2030, 1, 1), hash_=SHA256, pss=False,
         bc=True, extra=(), ski=True, subject=None, issuer_name=None):
    """A certificate for `key` signed by issuer (a Node; None: self-signed)."""
    signer = issuer.key if issuer else key
    b = (x509.CertificateBuilder()
         .subject_name(subject or _name(cn))
         .issuer_name(issuer_name or (issuer.cert.subject if issuer else subject or _name(cn)))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(dt.datetime(*nb, tzinfo=UTC))
         .not_valid_after(dt.datetime(*na, tzinfo=UTC)))
    if bc:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
    if ku == "default":
        ku = CA_KU if ca else LEAF_KU
    if ku is not None:
        b = b.add_extension(ku, critical=True)
    if eku == "default":
        eku = None if ca and not issuer else SERVER_EKU
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if san is None and not ca:
        san = [HOST]
    if san:
        names = [x509.IPAddress(ipaddress.ip_address(n[3:])) if n.startswith("ip:")
                 else x509.DNSName(n) for n in san]
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                            critical=False)
    if issuer and ski:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
        b = b.add_extension(aki, critical=False)
    for ext, critical in extra:
        b = b.add_extension(ext, critical=critical)
    if pss:
        pad = padding.PSS(mgf=padding.MGF1(hash_), salt_length=padding.PSS.DIGEST_LENGTH)
        return Node(b.sign(signer, hash_, rsa_padding=pad), key)
    return Node(b.sign(signer, hash_), key)


def tamper(der, offset_from_end=1):
    data = bytearray(der)
    data[-offset_from_end] ^= 0x01
    return bytes(data)


@pytest.fixture(scope="module")
def pki():
    k = {name: rsa.generate_private_key(65537, 2048) for name in ("root", "int", "int2", "leaf",
                                                                  "other", "int3")}
    k["ec_root"] = ec.generate_private_key(ec.SECP256R1())
    k["ec_leaf"] = ec.generate_private_key(ec.SECP256R1())
    k["p384"] = ec.generate_private_key(ec.SECP384R1())
    k["rsa1024"] = rsa.generate_private_key(65537, 1024)
    k["rsa4096"] = rsa.generate_private_key(65537, 4096)
    p = {"keys": k}
    p["root"] = make("upcert Test Root CA 1", k["root"], ca=True)
    p["int"] = make("upcert Test RSA 2048 M01", k["int"], p["root"], ca=True, path_len=0)
    p["leaf"] = make("*.iot.example.com", k["leaf"], p["int"],
                     san=["iot.eu-west-1.example.com", "*.iot.eu-west-1.example.com"])
    p["ec_root"] = make("upcert Test Root CA 3", k["ec_root"], ca=True)
    p["ec_leaf"] = make("ec leaf", k["ec_leaf"], p["ec_root"])
    p["other_root"] = make("upcert Other Root", k["other"], ca=True)
    return p


def _cases(p, tmp):
    k = p["keys"]
    root, inter, leaf = p["root"], p["int"], p["leaf"]
    files = {}

    def path(der):
        if der not in files:
            f = tmp / f"c{len(files)}.der"
            f.write_bytes(der)
            files[der] = str(f)
        return files[der]

    cases = []

    def case(name, chain, roots, want, host=HOST, now=NOW, **kw):
        chain = [c.der if isinstance(c, Node) else c for c in chain]
        roots = [c.der if isinstance(c, Node) else c for c in roots]
        cases.append(dict(name=name, chain=[path(c) for c in chain],
                          roots=[path(c) for c in roots], host=host, now=list(now),
                          want=want, **kw))

    def leaf_with(name, want, issuer=inter, host=HOST, key=None, **kw):
        node = make(name, key or k["leaf"], issuer, **kw)
        case(name, [node, inter], [root], want, host=host)

    # Good chains.
    case("rsa root>int>leaf", [leaf, inter], [root], OK)
    case("rsa, root sent too", [leaf, inter, root], [root], OK)
    case("rsa, out of order", [leaf, root, inter], [root], OK)
    case("rsa, unrelated extra", [leaf, p["ec_leaf"], p["other_root"], inter], [root], OK)
    case("rsa, anchors: other first", [leaf, inter], [p["other_root"], p["ec_root"], root], OK)
    case("ec root>leaf (sha256)", [p["ec_leaf"]], [p["ec_root"]], OK)
    case("ec leaf signed ecdsa-sha384",
         [make("ec384", k["ec_leaf"], p["ec_root"], hash_=hashes.SHA384())], [p["ec_root"]], OK)
    case("ec leaf under rsa int", [make("ecl", k["ec_leaf"], inter), inter], [root], OK)
    leaf_with("sha384WithRSA", OK, hash_=hashes.SHA384())
    leaf_with("sha512WithRSA", OK, hash_=hashes.SHA512())
    leaf_with("rsa-pss sha256", OK, pss=True)
    leaf_with("rsa-pss sha384", OK, pss=True, hash_=hashes.SHA384())
    r4096 = make("root 4096", k["rsa4096"], ca=True, hash_=hashes.SHA384())
    case("rsa-4096 root", [make("l4096", k["leaf"], r4096)], [r4096], OK)
    pinned = make("pinned", k["leaf"], None, san=[HOST])
    case("leaf is an anchor", [pinned], [root, pinned], OK)
    case("anchor without SKI/AKI", [make("nokid", k["leaf"], make(
        "noski root", k["other"], ca=True, ski=False), ski=False)],
         [make("noski root", k["other"], ca=True, ski=False)], OK)
    case("v1-style anchor (no extensions)", [make("v1leaf", k["leaf"], make(
        "v1 root", k["other"], bc=False, ku=None, ca=True))],
         [make("v1 root", k["other"], bc=False, ku=None, ca=True)], OK)
    leaf_with("unknown non-critical extension", OK,
              extra=[(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), False)])
    leaf_with("no keyUsage, no EKU", OK, ku=None, eku=None)
    leaf_with("EKU anyExtendedKeyUsage", OK, eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    # Host names: RFC 6125 §6.4.3 wildcards, case, IP addresses.
    for host, want in (("iot.eu-west-1.example.com", OK), (HOST, OK), (HOST.upper(), OK),
                       (HOST + ".", OK), ("a.b.iot.eu-west-1.example.com", BAD),
                       ("eu-west-1.example.com", BAD), ("iot.eu-west-1.example.co", BAD),
                       ("other.example.org", BAD), ("192.0.2.1", BAD)):
        case(f"host {host}", [leaf, inter], [root], want, host=host)
    for san, host, want in (
        ("*.example.com", "foo.example.com", OK),
        ("*.example.com", "bar.foo.example.com", BAD),
        ("*.example.com", "example.com", BAD),
        ("*.example.com", ".example.com", BAD),
        ("baz*.example.net", "baz1.example.net", BAD),  # partial wildcards: refused
        ("*baz.example.net", "foobaz.example.net", BAD),
        ("b*z.example.net", "buuz.example.net", BAD),
        ("*.com", "example.com", BAD),  # public-suffix-only form
        ("www.*.example.com", "www.a.example.com", BAD),  # not the left-most label
        ("*.*.example.com", "a.b.example.com", BAD),
        ("IoT.Example.COM", "iot.example.com", OK),
        ("iot.example.com.", "IOT.example.com", OK),
        ("ip:192.0.2.1", "192.0.2.1", OK),
        ("ip:192.0.2.1", "192.0.2.2", BAD),
        ("192.0.2.1", "192.0.2.1", BAD),  # an IP is matched against iPAddress only
        ("ip:2001:db8::1", "2001:db8::1", OK),
        ("ip:2001:db8::1", "[2001:DB8:0:0:0:0:0:1]", OK),
        ("ip:2001:db8::1", "2001:db8::2", BAD),
        ("ip:192.0.2.1", "iot.example.com", BAD),
    ):
        leaf_with(f"san {san} host {host}", want, host=host, san=[san])
    leaf_with("CN only, no SAN", BAD, host="cn-only.example.com", san=[],
              subject=_name("cn-only.example.com"))
    # Validity.
    for who in ("leaf", "int"):
        for what, nb, na in (("expired", (2020, 1, 1), (2027, 5, 31)),
                             ("not yet valid", (2027, 6, 2), (2030, 1, 1))):
            if who == "leaf":
                leaf_with(f"{what} leaf", EXPIRED, nb=nb, na=na)
            else:
                i = make("short int", k["int"], root, ca=True, nb=nb, na=na)
                case(f"{what} intermediate", [make("l", k["leaf"], i), i], [root], EXPIRED)
    case("expired anchor", [leaf, inter], [make("upcert Test Root CA 1", k["root"], ca=True,
                                                 na=(2027, 1, 1))], EXPIRED)
    case("validity bounds inclusive", [leaf, inter], [root], OK, now=(2030, 1, 1, 0, 0, 0))
    case("clock not trusted", [leaf, inter], [root], UNKNOWN, trusted=False)
    # Trust.
    case("unknown CA", [leaf, inter], [p["other_root"]], UNKNOWN_CA)
    case("no roots", [leaf, inter], [], UNKNOWN_CA)
    case("intermediate missing", [leaf], [root], UNKNOWN_CA)
    impostor = make("upcert Test Root CA 1", k["other"], ca=True)
    case("impostor root: same name, other key id", [leaf, inter], [impostor], UNKNOWN_CA)
    impostor_noski = make("upcert Test Root CA 1", k["other"], ca=True, ski=False)
    case("impostor root without SKI", [leaf, inter], [impostor_noski], BAD)
    notca = make("not a CA", k["int"], root)  # a leaf certificate used as a CA
    case("leaf used as CA", [make("l", k["leaf"], notca), notca], [root], UNKNOWN_CA)
    nobc = make("no bc", k["int"], root, bc=False, ca=True)
    case("intermediate without basicConstraints", [make("l", k["leaf"], nobc), nobc], [root],
         UNKNOWN_CA)
    i2 = make("int2", k["int2"], inter, ca=True)
    case("pathLen 0 exceeded", [make("l", k["leaf"], i2), i2, inter], [root], UNKNOWN_CA)
    ia = make("ia", k["int"], root, ca=True, path_len=1)
    ib = make("ib", k["int2"], ia, ca=True)
    case("pathLen 1 kept", [make("l", k["leaf"], ib), ia, ib], [root], OK)
    ic = make("ic", k["int3"], ib, ca=True)
    case("path too long", [make("l", k["leaf"], ic), ic, ib, ia], [root], UNKNOWN_CA)
    root_pl0 = make("root pl0", k["root"], ca=True, path_len=0)
    ipl = make("ipl", k["int"], root_pl0, ca=True)
    case("anchor pathLen 0 exceeded", [make("l", k["leaf"], ipl), ipl], [root_pl0], UNKNOWN_CA)
    noksign = make("no keyCertSign", k["int"], root, ca=True, ku=_ku(digital_signature=True))
    case("CA keyUsage without keyCertSign", [make("l", k["leaf"], noksign), noksign], [root],
         UNKNOWN_CA)
    eku_int = make("client-only int", k["int"], root, ca=True,
                   eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    case("intermediate EKU without serverAuth", [make("l", k["leaf"], eku_int), eku_int], [root],
         UNKNOWN_CA)
    leaf_with("leaf keyUsage without digitalSignature", UNSUPPORTED,
              ku=_ku(key_encipherment=True))
    leaf_with("leaf EKU clientAuth only", UNSUPPORTED, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    crit = [(x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), True)]
    leaf_with("unknown critical extension on leaf", UNSUPPORTED, extra=crit)
    cint = make("crit int", k["int"], root, ca=True, extra=crit)
    case("unknown critical extension on intermediate", [make("l", k["leaf"], cint), cint],
         [root], UNSUPPORTED)
    nc = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")],
                              excluded_subtrees=None)
    ncint = make("nc int", k["int"], root, ca=True, extra=[(nc, True)])
    case("nameConstraints (not processed) on intermediate", [make("l", k["leaf"], ncint),
                                                             ncint], [root], UNSUPPORTED)
    # Signatures.
    case("tampered leaf signature", [tamper(leaf.der), inter], [root], BAD)
    case("tampered intermediate signature", [leaf, tamper(inter.der)], [root], BAD)
    case("tampered ec leaf signature", [tamper(p["ec_leaf"].der)], [p["ec_root"]], BAD)
    tbs = bytearray(leaf.der)
    at = tbs.find(b"abc123-ats") if b"abc123-ats" in tbs else tbs.find(b"iot.eu-west-1")
    tbs[at] ^= 0x20  # I -> i: the tbsCertificate changed, the signature not
    case("tampered leaf tbsCertificate", [bytes(tbs), inter], [root], BAD)
    pss_wrong = make("pss", k["leaf"], inter, pss=True)
    case("pss leaf, intermediate is a different key", [pss_wrong, make(
        "upcert Test RSA 2048 M01", k["int2"], root, ca=True, ski=False)], [root], BAD)
    p384_root = make("p384 root", k["p384"], ca=True, hash_=hashes.SHA384())
    case("P-384 issuer", [make("l384", k["ec_leaf"], p384_root, hash_=hashes.SHA384())],
         [p384_root], UNSUPPORTED)
    r1024 = make("r1024", k["rsa1024"], ca=True)
    case("RSA-1024 issuer", [make("l1024", k["leaf"], r1024)], [r1024], UNSUPPORTED)
    big = x509.UnrecognizedExtension(UNKNOWN_OID, b"\x04\x82\x23\x28" + b"\x00" * 9000)
    leaf_with("leaf over 8 KB", UNSUPPORTED, extra=[(big, False)])
    case("malformed leaf", [leaf.der[:-20], inter], [root], BAD)
    case("no certificate", [], [root], BAD)
    return cases


def _run(tmp_path, cases, heapsize="256K"):
    (tmp_path / "cases.json").write_text("".join(json.dumps(c) + "\n" for c in cases))
    script = tmp_path / "verify_all.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
    proc = subprocess.run(micropython_cmd(heapsize=heapsize) + [str(script),
                                                                str(tmp_path / "cases.json")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    return {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}


def test_chains(tmp_path, pki):
    cases = _cases(pki, tmp_path)
    got = _run(tmp_path, cases)
    wrong = []
    for c in cases:
        r = got[c["name"]]
        if c["want"] is OK:
            fine = "ok" in r
        else:
            reason = CLOCK if c["want"] == UNKNOWN else SERVER
            fine = r.get("alert") == c["want"] and r.get("reason") == reason
        if not fine:
            wrong.append(f"{c['name']}: want {c['want'] or 'ok'}, got {r}")
    assert not wrong, "\n".join(wrong)
    assert len(cases) > 80


def test_agrees_with_cryptography_verifier(tmp_path, pki):
    # The good chains (and a few refusals) as pyca/cryptography's own path validator judges them.
    from cryptography.x509.verification import PolicyBuilder, Store

    root, inter, leaf = pki["root"], pki["int"], pki["leaf"]
    now = dt.datetime(*NOW, tzinfo=UTC)
    verifier = (PolicyBuilder().store(Store([root.cert])).time(now)
                .build_server_verifier(x509.DNSName(HOST)))
    verifier.verify(leaf.cert, [inter.cert])
    verifier.verify(leaf.cert, [root.cert, inter.cert])
    wrong = (PolicyBuilder().store(Store([root.cert])).time(now)
             .build_server_verifier(x509.DNSName("other.example.org")))
    with pytest.raises(x509.verification.VerificationError):
        wrong.verify(leaf.cert, [inter.cert])
    cases = [c for c in _cases(pki, tmp_path) if c["name"] in (
        "rsa root>int>leaf", "host other.example.org", "unknown CA")]
    got = _run(tmp_path, cases)
    assert "ok" in got["rsa root>int>leaf"]
    assert got["host other.example.org"]["alert"] == BAD
    assert got["unknown CA"]["alert"] == UNKNOWN_CA


AMAZON = ("Amazon_Root_CA_1.pem", "Amazon_Root_CA_2.pem", "Amazon_Root_CA_3.pem",
          "Amazon_Root_CA_4.pem")
# Parse each Amazon root on the device, check its self-signature, report its CA extensions.
AMAZON_SCRIPT = r"""
import sys, json
from binascii import hexlify
from upcert import certlean, chain
for path in sys.argv[1:]:
    c = certlean.load(open(path).read())
    r = {"subject": hexlify(chain.subject_der(c)).decode(), "issuer": hexlify(chain.issuer_der(c)).decode(),
         "tbs": hexlify(chain.tbs(c)).decode(), "ski": hexlify(c.ski).decode(),
         "ext": list(chain._extensions(c, None, None, True))}
    try:
        chain._signed_by(c, c)
        r["self_signed"] = "ok"
    except chain.ChainError as exc:
        r["self_signed"] = exc.alert
    print(json.dumps(r))
"""


def _amazon_roots():
    found = []
    for folder in (Path("/etc/ssl/certs"), Path("/usr/share/ca-certificates/mozilla")):
        for name in AMAZON:
            for p in (folder / name, folder / name.replace(".pem", ".crt")):
                if p.exists() and p.name not in {f.name for f in found}:
                    found.append(p)
    try:
        import certifi  # noqa: PLC0415
    except ImportError:
        certifi = None
    return found, certifi


def test_amazon_roots(tmp_path):
    found, certifi = _amazon_roots()
    pems = {}
    for p in found:
        pems[p.stem] = p.read_bytes()
    if len(pems) < 4 and certifi:
        bundle = Path(certifi.where()).read_text()
        for block in bundle.split("-----END CERTIFICATE-----"):
            if "-----BEGIN CERTIFICATE-----" not in block:
                continue
            pem = (block[block.index("-----BEGIN"):] + "-----END CERTIFICATE-----\n").encode()
            cn = x509.load_pem_x509_certificate(pem).subject.rfc4514_string()
            for i in range(1, 5):
                if cn.startswith(f"CN=Amazon Root CA {i},"):
                    pems.setdefault(f"Amazon_Root_CA_{i}", pem)
    if len(pems) < 4:
        missing("no Amazon Root CA 1-4 in /etc/ssl/certs or certifi: apt-get install "
                "ca-certificates")
    paths = []
    for name in sorted(pems):
        f = tmp_path / f"{name}.pem"
        f.write_bytes(pems[name])
        paths.append(f)
    (tmp_path / "amazon.py").write_text(AMAZON_SCRIPT)
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
    proc = subprocess.run(micropython_cmd(heapsize="256K") + [str(tmp_path / "amazon.py")]
                          + [str(p) for p in paths], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    for f, r in zip(paths, rows, strict=True):
        c = x509.load_pem_x509_certificate(f.read_bytes())
        assert bytes.fromhex(r["subject"]) == c.subject.public_bytes()
        assert bytes.fromhex(r["issuer"]) == c.issuer.public_bytes()
        assert bytes.fromhex(r["tbs"]) == c.tbs_certificate_bytes
        assert r["ski"] == c.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier).value.digest.hex()
        ca, path_len, ku, eku, san = r["ext"]
        assert (ca, path_len, eku, san) == (True, None, None, None), f.name
        assert ku & 0x04 and ku & 0x80, f.name  # keyCertSign, digitalSignature
    # Root CA 1: RSA-2048 SHA-256; 2: RSA-4096 SHA-384; 3: P-256 ECDSA-SHA256; 4: P-384.
    assert [r["self_signed"] for r in rows] == ["ok", "ok", "ok", UNSUPPORTED]


def test_mutants_give_only_verify_error(tmp_path, pki):
    # Byte flips and truncations of the sent certificates: anything but a ChainError (with a
    # TLS alert) is a bug, and no mutant of a signed certificate may pass.
    rng = random.Random(5246)
    names = ("leaf", "int", "ec_leaf", "root", "ec_root")
    fixed = {}
    for n in names:
        fixed[n] = tmp_path / f"{n}.der"
        fixed[n].write_bytes(pki[n].der)
    cases = []
    for i in range(400):
        which = names[rng.randrange(3)]
        data = bytearray(pki[which].der)
        if i % 4 == 0:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
        f = tmp_path / f"m{i}.der"
        f.write_bytes(bytes(data))
        chain_ = {"leaf": [f, fixed["int"]], "int": [fixed["leaf"], f], "ec_leaf": [f]}[which]
        root = fixed["ec_root" if which == "ec_leaf" else "root"]
        cases.append(dict(name=f"m{i}", chain=[str(c) for c in chain_], roots=[str(root)],
                          host=HOST, now=list(NOW)))
    got = _run(tmp_path, cases)
    crashes = {n: r for n, r in got.items() if "error" in r}
    assert not crashes, crashes
    passed = [n for n, r in got.items() if "ok" in r]
    assert not passed, passed
    assert {r["alert"] for r in got.values()} >= {BAD}


# Runs under MicroPython: chain.verify_signed for each line of argv[1] (JSON), one line out.
SIGNED_SCRIPT = r"""
import sys, json
from binascii import unhexlify
from upcert import certlean, chain
for line in open(sys.argv[1]):
    case = json.loads(line)
    with open(case["leaf"], "rb") as f:
        leaf = certlean.Cert(f.read())
    try:
        r = chain.verify_signed(leaf, case["scheme"], unhexlify(case["data"]),
                                unhexlify(case["sig"]))
    except chain.ChainError as exc:
        r = exc.alert
    print(json.dumps(r))
"""


def test_server_key_exchange_signatures(tmp_path, pki):
    # ServerKeyExchange (RFC 5246 §7.4.3): the leaf's key signs client_random + server_random +
    # params under a SignatureScheme (RFC 8446 §4.2.3 code points).
    k = pki["keys"]
    data = os.urandom(64) + bytes.fromhex("030017") + b"\x41\x04" + os.urandom(64)
    ec_leaf, rsa_leaf = tmp_path / "ec.der", tmp_path / "rsa.der"
    ec_leaf.write_bytes(pki["ec_leaf"].der)
    rsa_leaf.write_bytes(pki["leaf"].der)
    p384 = tmp_path / "p384.der"
    p384.write_bytes(make("p384 leaf", k["p384"], pki["ec_root"]).der)
    h = {4: hashes.SHA256(), 5: hashes.SHA384(), 6: hashes.SHA512()}
    cases = []  # (leaf, scheme, signature, expected)
    for hi in (4, 5):
        sig = k["ec_leaf"].sign(data, ec.ECDSA(h[hi]))
        cases += [(ec_leaf, hi << 8 | 3, sig, True), (rsa_leaf, hi << 8 | 3, sig, False)]
    for hi in (4, 5, 6):
        sig = k["leaf"].sign(data, padding.PKCS1v15(), h[hi])
        cases += [(rsa_leaf, hi << 8 | 1, sig, True), (ec_leaf, hi << 8 | 1, sig, False)]
        cases.append((rsa_leaf, ((hi - 3) % 3 + 4) << 8 | 1, sig, False))  # another hash
    for lo in (4, 5, 6):
        pss = padding.PSS(mgf=padding.MGF1(h[lo]), salt_length=h[lo].digest_size)
        sig = k["leaf"].sign(data, pss, h[lo])
        cases += [(rsa_leaf, 0x0800 | lo, sig, True), (rsa_leaf, 0x0800 | lo, tamper(sig), False)]
    sig = k["ec_leaf"].sign(data, ec.ECDSA(hashes.SHA256()))
    cases += [(ec_leaf, 0x0403, tamper(sig), False), (ec_leaf, 0x0403, b"\x30\x00", False),
              (ec_leaf, 0x0203, sig, 47), (rsa_leaf, 0x0201, sig, 47),
              (p384, 0x0503, k["p384"].sign(data, ec.ECDSA(hashes.SHA384())), UNSUPPORTED)]
    listing = tmp_path / "signed.json"
    listing.write_text("".join(json.dumps({"leaf": str(leaf), "scheme": scheme,
                                           "data": data.hex(), "sig": sig.hex()}) + "\n"
                               for leaf, scheme, sig, _ in cases))
    (tmp_path / "signed.py").write_text(SIGNED_SCRIPT)
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
    proc = subprocess.run(micropython_cmd(heapsize="256K") + [str(tmp_path / "signed.py"),
                                                              str(listing)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    want = [c[3] for c in cases]
    assert got == want, [(f"{c[0].name} 0x{c[1]:04x}", g, w)
                         for c, g, w in zip(cases, got, want, strict=True) if g != w]
