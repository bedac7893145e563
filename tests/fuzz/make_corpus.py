"""Write tests/fuzz/corpus/der/: seed certificates (seed-*.der: varied keys, signature
algorithms, times, names, serials, made with pyca/cryptography, plus Amazon's public roots),
hand-made inputs with the answer the reader must give (edge-*.der, and regress-*.der for the
bugs the fuzzer found; EDGES), while run_long.py adds crash-*.der. `python -m
tests.fuzz.make_corpus [--reseed]` rewrites edges (seeds only with --reseed, as their keys are
random) and leaves other files alone. Only certificates are written; the throwaway private keys
never leave this process.
"""

import datetime as dt
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from tests.fuzz.fwload import CORPUS
from tests.fuzz.mutate import encode, header, offsets, parse, pem

UTC = dt.timezone.utc
SHA256 = hashes.SHA256()
_AMAZON = ("Amazon_Root_CA_1", "Amazon_Root_CA_3")


def _name(cn, string_type=None):
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "upcert fuzz")]
    if cn is not None:
        kw = {"_type": string_type} if string_type else {}
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn, **kw))
    return x509.Name(attrs)


def cert(key, signer, *, cn="dev1", issuer="upcert CA", serial=0x1234, nb=(2026, 1, 1),
         na=(2027, 1, 1), hash_=SHA256, pss=False, string_type=None, ext=True):
    """A certificate for `key`'s public half, signed by `signer`."""
    b = (x509.CertificateBuilder().subject_name(_name(cn, string_type))
         .issuer_name(_name(issuer)).public_key(key.public_key()).serial_number(serial)
         .not_valid_before(dt.datetime(*nb, tzinfo=UTC))
         .not_valid_after(dt.datetime(*na, tzinfo=UTC)))
    if ext:
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    if pss:
        pad = padding.PSS(mgf=padding.MGF1(hash_), salt_length=padding.PSS.DIGEST_LENGTH)
        return b.sign(signer, hash_, rsa_padding=pad)
    return b.sign(signer, hash_)


def seed_certificates():
    """{name: certificate} for the seed set."""
    p256, p384 = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())
    r2048 = rsa.generate_private_key(65537, 2048)
    ed = ed25519.Ed25519PrivateKey.generate()
    return {
        "ec256-ecdsa256": cert(p256, p256),
        "ec384-ecdsa384": cert(p384, p256, hash_=hashes.SHA384(), serial=(1 << 159) - 1),
        "ec256-rsa2048": cert(p256, r2048, nb=(2049, 12, 31, 23, 59, 59), na=(2050, 1, 1)),
        "rsa2048-pss": cert(r2048, r2048, pss=True, serial=0x80),
        "rsa2048-far": cert(r2048, p256, nb=(1950, 1, 1), na=(9999, 12, 31, 23, 59, 59)),
        "ec256-dsa": cert(p256, dsa.generate_private_key(2048), cn=None),
        "ed25519": cert(ed, ed, hash_=None, issuer=None, ext=False),
        "bmp-cn": cert(p256, p256, cn="b\u00e9mp", string_type=_ASN1Type.BMPString),
        "universal-cn": cert(p256, p256, cn="u\U0001f600", string_type=_ASN1Type.UniversalString),
        "utf8-cn": cert(p256, p256, cn="d\u00e9vice-\u6771\u4eac", ext=False),
    }


# name -> what the reader's CertificateError must say (on CPython and on the unix port), or
# None: the input must parse. regress-* are the bugs tests/fuzz found, as small inputs.
EDGES = {
    "regress-oid-huge-arc": "bad OID",  # was: ValueError (int to str limit), slow on the port
    "regress-oid-many-arcs": "bad OID",  # was: ~60x the input in arc lists and strings
    "regress-universal-overflow": "bad string",  # was: OverflowError from chr() on CPython
    "regress-bmp-long-cn": None,  # was: ~40x the input in 1-char strings
    "edge-bmp-surrogate-pair": None,  # U+1F600 as UTF-16, as pyca/cryptography writes it
    "edge-negative-serial": None,  # -128: content 0x80 (RFC 5280 wants positive; some CAs)
    "edge-empty": "no data",
    "edge-not-sequence": "not a certificate: expected SEQUENCE at byte 0",
    "edge-truncated-header": "truncated at byte 0",
    "edge-truncated-half": "runs past the end",
    "edge-indefinite-length": "indefinite length at byte 1",
    "edge-huge-length": "truncated at byte 6: length 4294967295 runs past the end",
    "edge-too-many-length-bytes": "length too long at byte 1: 9 length bytes",
    "edge-non-minimal-length": "non-minimal length at byte 13: 2 needs no long form",
    "edge-length-leading-zero": "non-minimal length at byte 1: leading zero",
    "edge-nested-length-lie": "length 65520 runs past the end",
    "edge-high-tag-number": "unsupported tag at byte 4",
    "edge-wrong-tag-serial": "serialNumber: expected tag 0x02",
    "edge-trailing-bytes": "trailing bytes",
    "edge-trailing-in-validity": "trailing bytes",
    "edge-sig-alg-mismatch": "signature algorithm mismatch",
    "edge-bad-time": "bad time",
    "edge-utf8-surrogate": "bad string",
    "edge-utf8-overlong": "bad string",
    "edge-utf8-past-10ffff": "bad string",
    "edge-bmp-lone-surrogate": "bad string",
    "edge-pem-bad-base64": "PEM CERTIFICATE: bad base64",
    "edge-pem-empty": "PEM CERTIFICATE: block is empty",
    "edge-pem-no-end": "PEM: no '-----BEGIN CERTIFICATE-----'",
}


def _set_cn(der, tag, value):
    t = parse(der)
    cn = t.kids[0].kids[5].kids[-1].kids[0].kids[1]  # tbs.subject.(last RDN).(first ATV).value
    cn.tag, cn.content = tag, value
    return encode(t)


def _tbs_with(der, tbs=None, serial=None):
    # The certificate re-encoded with a lying header on tbsCertificate or on its serialNumber
    # (a long-form length where the short form is required); enclosing lengths stay right.
    t = parse(der)
    parts = [encode(k) for k in t.kids[0].kids]
    if serial:
        value = t.kids[0].kids[1].content
        parts[1] = serial + bytes((len(value),)) + value
    content = b"".join(parts)
    tbs_der = (tbs or header(0x30, len(content))) + content
    rest = b"".join(encode(k) for k in t.kids[1:])
    return header(0x30, len(tbs_der) + len(rest)) + tbs_der + rest


def edge_inputs(der):
    """{name: bytes} for EDGES, made from one seed certificate `der` (an EC P-256 one)."""
    offs = offsets(parse(der))
    body = der[offs[()][1]:]
    mismatch = parse(der)
    mismatch.kids[1].kids[0].content = bytes.fromhex("2a8648ce3d040303")  # ecdsa-with-SHA384
    validity = parse(der)
    validity.kids[0].kids[4].kids.append(validity.kids[0].kids[4].kids[0])
    bad_time = parse(der)
    bad_time.kids[0].kids[4].kids[0].content = b"261301000000Z"
    negative = parse(der)
    negative.kids[0].kids[1].content = b"\x80"
    huge_arc, many_arcs = parse(der), parse(der)
    huge_arc.kids[0].kids[6].kids[0].kids[0].content = b"\xff" * 2500 + b"\x01"
    many_arcs.kids[0].kids[6].kids[0].kids[0].content = b"\x01" * 3000
    so = offs[(0, 1)][0]  # serialNumber
    text = pem(der)
    return {
        "edge-empty": b"",
        "edge-not-sequence": b"\x02\x01\x00",
        "edge-truncated-header": b"\x30",
        "edge-truncated-half": der[: len(der) // 2],
        "edge-indefinite-length": b"\x30\x80" + body + b"\x00\x00",
        "edge-huge-length": b"\x30\x84\xff\xff\xff\xff" + body,
        "edge-too-many-length-bytes": b"\x30\x89" + len(body).to_bytes(9, "big") + body,
        "edge-non-minimal-length": _tbs_with(der, serial=b"\x02\x81"),
        "edge-length-leading-zero": b"\x30\x83\x00" + len(body).to_bytes(2, "big") + body,
        "edge-nested-length-lie": _tbs_with(der, tbs=b"\x30\x82\xff\xf0"),
        "edge-high-tag-number": der[:4] + b"\x1f" + der[5:],
        "edge-wrong-tag-serial": der[:so] + b"\x04" + der[so + 1 :],
        "edge-trailing-bytes": der + b"\x00",
        "edge-trailing-in-validity": encode(validity),
        "edge-sig-alg-mismatch": encode(mismatch),
        "edge-bad-time": encode(bad_time),
        "regress-oid-huge-arc": encode(huge_arc),
        "regress-oid-many-arcs": encode(many_arcs),
        "edge-utf8-surrogate": _set_cn(der, 0x0C, b"\xed\xa0\x80"),
        "edge-utf8-overlong": _set_cn(der, 0x0C, b"\xc0\x80"),
        "edge-utf8-past-10ffff": _set_cn(der, 0x0C, b"\xf4\x90\x80\x80"),
        "regress-bmp-long-cn": _set_cn(der, 0x1E, "\u4e2d".encode("utf-16-be") * 1000),
        "edge-bmp-surrogate-pair": _set_cn(der, 0x1E, "\U0001f600".encode("utf-16-be")),
        "edge-negative-serial": encode(negative),
        "edge-bmp-lone-surrogate": _set_cn(der, 0x1E, b"\xd8\x3d\x00\x41"),
        "regress-universal-overflow": _set_cn(der, 0x1C, b"\xff\xff\xff\xff"),
        "edge-pem-bad-base64": b"-----BEGIN CERTIFICATE-----\nMIIBQUJ\n-----END CERTIFICATE-----\n",
        "edge-pem-empty": b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        "edge-pem-no-end": text.split(b"-----END")[0],
    }


def main(argv=None):
    reseed = "--reseed" in (sys.argv[1:] if argv is None else argv)
    CORPUS.mkdir(parents=True, exist_ok=True)
    if reseed or not list(CORPUS.glob("seed-*.der")):
        for name, c in seed_certificates().items():
            (CORPUS / f"seed-{name}.der").write_bytes(c.public_bytes(serialization.Encoding.DER))
        for name in _AMAZON:
            c = x509.load_pem_x509_certificate(Path(f"/etc/ssl/certs/{name}.pem").read_bytes())
            (CORPUS / f"seed-{name.lower()}.der").write_bytes(
                c.public_bytes(serialization.Encoding.DER))
    for name, data in edge_inputs((CORPUS / "seed-ec256-ecdsa256.der").read_bytes()).items():
        (CORPUS / f"{name}.der").write_bytes(data)
    print(f"corpus written to {CORPUS}")


if __name__ == "__main__":
    main()
