"""Hypothesis strategy for valid certificates made by pyca/cryptography (keys, signers, hashes,
RSA-PSS, serials, dates 1950-9999, CNs in every DirectoryString type, extensions), and the
view the device reader must give for each (cryptography as the oracle).
"""

import calendar
import datetime as dt
import hashlib
import warnings
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

from tests.fuzz.mutate import encode, parse

UTC = dt.timezone.utc
NIST_BITS = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}
_PRINTABLE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?"
# Signature algorithm OIDs -> AWS IoT's names: the one table (firmware/upcert/sigalgs.py).
from upcert.pki.algorithms import AWS_SIGNATURE_OIDS as AWS_NAMES  # noqa: E402

_HASHES = (hashes.SHA256(), hashes.SHA384(), hashes.SHA512())


@lru_cache(maxsize=1)
def keys():
    """A fixed pool of throwaway keys (made once per process; never written anywhere)."""
    return {
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "k256": ec.generate_private_key(ec.SECP256K1()),
        "rsa2048": rsa.generate_private_key(65537, 2048),
        "rsa4096": rsa.generate_private_key(65537, 4096),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "ed448": ed448.Ed448PrivateKey.generate(),
        "dsa": dsa.generate_private_key(2048),
    }


def _cn_text():
    return st.one_of(
        # cryptography caps a CN at 64 bytes of UTF-8: 16 characters of up to 4 bytes.
        st.tuples(st.just(None), st.text(min_size=1, max_size=16)),  # UTF8String
        st.tuples(st.just(_ASN1Type.PrintableString), st.text(_PRINTABLE, min_size=1, max_size=64)),
        st.tuples(st.just(_ASN1Type.IA5String),
                  st.text(st.characters(max_codepoint=127), min_size=1, max_size=64)),
        st.tuples(st.just(_ASN1Type.T61String),  # see device_cn()
                  st.text(st.characters(max_codepoint=255), min_size=1, max_size=32)),
        st.tuples(st.just(_ASN1Type.BMPString), st.text(min_size=1, max_size=16)),
        st.tuples(st.just(_ASN1Type.UniversalString), st.text(min_size=1, max_size=16)),
    )


def _names():
    cn = _cn_text().map(lambda t: x509.NameAttribute(NameOID.COMMON_NAME, t[1], _type=t[0])
                        if t[0] else x509.NameAttribute(NameOID.COMMON_NAME, t[1]))
    org = st.just(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "upcert"))
    return st.lists(st.one_of(cn, org), max_size=3).map(
        lambda attrs: x509.Name([x509.RelativeDistinguishedName([a]) for a in attrs]))


_when = st.datetimes(dt.datetime(1950, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59)).map(
    lambda d: d.replace(microsecond=0, tzinfo=UTC))


@st.composite
def certificates(draw):
    """(certificate, label) for a random valid certificate."""
    k = keys()
    subject = draw(st.sampled_from(sorted(k)))
    signer = draw(st.sampled_from(("p256", "p384", "rsa2048", "rsa2048-pss", "ed25519", "dsa")))
    nb, na = sorted((draw(_when), draw(_when)))
    b = (x509.CertificateBuilder().subject_name(draw(_names())).issuer_name(draw(_names()))
         .public_key(k[subject].public_key()).serial_number(draw(st.integers(1, (1 << 159) - 1)))
         .not_valid_before(nb).not_valid_after(na))
    if draw(st.booleans()):
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    if draw(st.booleans()):
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("dev.example")]), False)
    if draw(st.booleans()):  # key identifiers: what a chain and the rotation match on
        b = b.add_extension(x509.SubjectKeyIdentifier(draw(st.binary(min_size=1, max_size=32))),
                            False)
    if draw(st.booleans()):
        b = b.add_extension(x509.AuthorityKeyIdentifier(
            draw(st.binary(min_size=1, max_size=32)), None, None), False)
    h = draw(st.sampled_from(_HASHES))
    if signer == "ed25519":
        c = b.sign(k[signer], None)
    elif signer == "rsa2048-pss":
        pad = padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.DIGEST_LENGTH)
        c = b.sign(k["rsa2048"], h, rsa_padding=pad)
    else:
        c = b.sign(k[signer], hashes.SHA256() if signer == "dsa" else h)
    return c, f"{subject} key, signed by {signer}"


def _serial_hex(n):
    # The INTEGER's content octets without leading zeros (two's complement if negative).
    if n >= 0:
        return format(n, "x")
    return n.to_bytes(((~n).bit_length() + 8) // 8, "big", signed=True).hex().lstrip("0") or "0"


def device_cn(name):
    """The last CN of an x509.Name as the device decodes it: cryptography reads T61String as
    UTF-8, the device (like OpenSSL) as Latin-1, so re-read those bytes as Latin-1."""
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns:
        return None
    if cns[-1]._type == _ASN1Type.T61String:
        return cns[-1].value.encode("utf-8").decode("latin-1")
    return cns[-1].value


def _subject_public_key(c):
    # The subjectPublicKey bits as the certificate holds them (cryptography re-encodes EC
    # points as 04||X||Y; the device passes through what it reads, e.g. a hybrid 06|| form).
    tbs = parse(c.tbs_certificate_bytes).kids
    return tbs[6 if tbs[0].tag == 0xA0 else 5].kids[1].content[1:]


def expected(c):
    """The device reader's view of `c` (fwload.view keys), from cryptography. Key bits: RSA
    modulus size; EC only on the curves the device knows (P-256/384/521); else None."""
    der = c.public_bytes(serialization.Encoding.DER)
    pk = c.public_key()
    pub, bits, key_type = _subject_public_key(c), None, c.public_key_algorithm_oid.dotted_string
    if isinstance(pk, ec.EllipticCurvePublicKey):
        key_type, bits = "EC", NIST_BITS.get(pk.curve.name)
    elif isinstance(pk, rsa.RSAPublicKey):
        key_type, bits = "RSA", pk.key_size
        pub = pk.public_numbers().n.to_bytes((pk.key_size + 7) // 8, "big")
    oid = c.signature_algorithm_oid.dotted_string
    nb, na = c.not_valid_before_utc, c.not_valid_after_utc
    return {
        "serial": _serial_hex(c.serial_number),
        "subject_cn": device_cn(c.subject), "issuer_cn": device_cn(c.issuer),
        "not_before": calendar.timegm(nb.utctimetuple()),
        "not_after": calendar.timegm(na.utctimetuple()),
        "not_before_tuple": list(nb.utctimetuple()[:6]),
        "not_after_tuple": list(na.utctimetuple()[:6]),
        "key_type": key_type, "key_bits": bits, "public_key": pub.hex(),
        "sig_alg": AWS_NAMES.get(oid, oid), "sig_alg_aws_ok": oid in AWS_NAMES,
        "cert_id": hashlib.sha256(der).hexdigest(),
    }


# Where the device is stricter than cryptography, on purpose (found by run_long.py):
# - RFC 5280 §4.1.1.2: the two signature AlgorithmIdentifiers must match; cryptography does not
#   check it;
# - keys and signatures are whole octets (RFC 5480 §2.2, RFC 3279 §2.2.3), so their BIT STRING
#   has 0 unused bits; cryptography ignores that byte of signatureValue.
DEVICE_ONLY_REJECTS = ("signature algorithm mismatch", "bad BIT STRING")


def crypto_view(data):
    """cryptography's view of DER `data` in the device's terms, or None when it refuses it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return expected(x509.load_der_x509_certificate(data))
        except Exception:  # ValueError mostly; fields are decoded lazily, so anything goes
            return None


def expected_lean(c):
    """The lean reader's view of `c` (fwload.view_lean keys), from cryptography: the fields of
    expected() but serial and the time tuples, and the spans, key identifiers and extensions
    that chain.py and rotate.py read."""
    e = expected(c)
    for k in ("serial", "not_before_tuple", "not_after_tuple"):
        del e[k]
    tbs = parse(c.tbs_certificate_bytes).kids
    i = 1 if tbs[0].tag == 0xA0 else 0
    pk = c.public_key()

    def ext(kind):
        try:
            return c.extensions.get_extension_for_class(kind).value
        except x509.ExtensionNotFound:
            return None

    ski, aki = ext(x509.SubjectKeyIdentifier), ext(x509.AuthorityKeyIdentifier)
    e.update({
        "key_exp": pk.public_numbers().e if isinstance(pk, rsa.RSAPublicKey) else None,
        "signature_sha256": hashlib.sha256(c.signature).hexdigest(),
        "tbs_sha256": hashlib.sha256(c.tbs_certificate_bytes).hexdigest(),
        "sig_alg_der": b"".join(encode(k) for k in tbs[i + 1].kids).hex(),
        "issuer_der": encode(tbs[i + 2]).hex(), "subject_der": encode(tbs[i + 4]).hex(),
        "ski": ski.digest.hex() if ski else None,
        "aki": aki.key_identifier.hex() if aki and aki.key_identifier else None,
        "ext": [[x.oid.dotted_string, x.critical, x.value.public_bytes().hex()]
                for x in c.extensions],
    })
    return e


def crypto_view_lean(data):
    """cryptography's view of DER `data` in the lean reader's terms, or None when it refuses it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return expected_lean(x509.load_der_x509_certificate(data))
        except Exception:
            return None


def disagreement(dev, data, view=crypto_view):
    """Why the device's answer `dev` (fwload.view) contradicts cryptography's on `data`, or None.
    The device may accept what cryptography refuses (it skips extensions, other attributes).
    view: crypto_view (x509.load's fields) or crypto_view_lean (certlean.load's)."""
    want = view(data)
    if want is None or dev == want:
        return None
    if "error" in dev:
        if any(r in dev["message"] for r in DEVICE_ONLY_REJECTS):
            return None
        return f"cryptography reads it, the device says {dev['message']!r}"
    keys = [k for k in sorted(want) if dev.get(k) != want[k]]
    return f"fields differ from cryptography ({', '.join(keys)}): " + ", ".join(
        f"{k}={dev.get(k)!r} (want {want[k]!r})" for k in keys)


# Fields both device readers give: certlean must agree with x509.py on them whenever both accept.
COMMON = ("subject_cn", "issuer_cn", "not_before", "not_after", "key_type", "key_bits",
          "public_key", "sig_alg", "sig_alg_aws_ok", "cert_id")


def lean_vs_full(lean, full):
    """Why the lean reader's view (fwload.view_lean) contradicts x509.py's (fwload.view) on the
    same input, or None. x509.py also decodes the serial and the curve's OID; the lean reader
    reads the extensions' framing eagerly (chain.py does): so each may refuse alone."""
    if "error" in lean or "error" in full:
        return None
    diff = [k for k in COMMON if lean[k] != full[k]]
    return f"certlean and x509.py differ on {diff}" if diff else None
