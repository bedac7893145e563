# Signature checks for upcert's own TLS client: the one place that calls the signature
# primitives (p256, rsa, sha512), for the server's certificate chain (chain.py) and its
# ServerKeyExchange (tls12kx.py). Keys and algorithms are plain tuples, so neither the X.509
# reader nor chain.py need be in RAM while the (slow, big-int) checks run.
import hashlib

from micropython import const

from upcert.errors import CertificateError

_BAD_CERTIFICATE = const(42)  # TLS alerts (RFC 5246 §7.2.2)
_UNSUPPORTED_CERTIFICATE = const(43)
_HASHES = ("sha256", "sha384", "sha512")


def scheme(code):
    """(scheme, hash name, PSS salt length) of a TLS SignatureScheme (RFC 8446 §4.2.3 code
    points: 0x0403/0x0503 ECDSA SHA-256/384, 0x0401/0x0501/0x0601 PKCS #1 v1.5, 0x0804-0x0806
    RSA-PSS rsae with a hash-length salt), or None for one this client does not verify."""
    hi, lo = code >> 8, code & 0xFF
    if lo == 3 and 4 <= hi <= 5:
        return "ecdsa", _HASHES[hi - 4], 0
    if lo == 1 and 4 <= hi <= 6:
        return "pkcs1", _HASHES[hi - 4], 0
    if hi == 8 and 4 <= lo <= 6:
        return "pss", _HASHES[lo - 4], 16 * lo - 32  # 32, 48, 64 bytes
    return None


def unfit(alg, key):
    """Why key (type, bits, public key, RSA exponent) cannot make alg's signatures: None if it
    can, else (why, unsupported): unsupported True for a key this client does not handle
    (P-384, RSA outside 2048-4096 bits), False for a key of the wrong type."""
    kind, bits = key[0], key[1]
    if alg[0] == "ecdsa":
        if kind != "EC":
            return "an ECDSA signature, key %s" % kind, False
        if bits != 256:
            return "unsupported: P-%s keys" % bits, True
    elif kind != "RSA":
        return "an RSA signature, key %s" % kind, False
    elif not 2048 <= bits <= 4096:
        return "unsupported: %d-bit RSA key" % bits, True
    return None


def check(alg, key, data, sig):
    """True if sig over data verifies with key (as unfit() takes it, fit for alg). ValueError or
    CertificateError for a malformed signature or key."""
    scheme_, hash_name, salt = alg
    if hash_name == "sha256":
        digest = hashlib.sha256(data).digest()
    else:
        from upcert import sha512

        digest = getattr(sha512, hash_name)(data).digest()
    if scheme_ == "ecdsa":
        from upcert import p256

        # a SHA-384 digest is cut to the curve's 256 bits (FIPS 186-4 §6.4)
        r, s = _rs(sig)
        return p256.verify_digest(key[2], digest[:32], r, s)
    from upcert import rsa

    k = rsa.PublicKey(int.from_bytes(key[2], "big"), key[3])
    if scheme_ == "pss":  # MGF1 with hash_name too
        return rsa.verify_pss(k, hash_name, digest, sig, salt)
    return rsa.verify_pkcs1(k, hash_name, digest, sig)


def path(todo):
    """Check the signatures of a certificate path (chain.walk()'s list of (alg, signed data,
    signature, issuer key, subject CN, issuer CN)): None when all verify, else (TLS alert,
    message) for the first that does not."""
    for alg, data, sig, key, cn, issuer in todo:
        why = unfit(alg, key)
        if why and why[1]:
            return _UNSUPPORTED_CERTIFICATE, "%s (%r)" % (why[0], issuer)
        if why:
            why = why[0]
        else:
            try:
                if not check(alg, key, data, sig):
                    why = "a signature that does not verify"
            except (ValueError, CertificateError) as exc:
                why = "a bad signature (%s)" % exc
        if why:
            return _BAD_CERTIFICATE, "%r has %s (issuer %r)" % (cn, why, issuer)
    return None


def _rs(sig):
    # (r, s) of an Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } (RFC 3279 §2.2.3): a
    # P-256 one is at most 72 bytes, so every length is in DER's short form (X.690 §8.1.3.4).
    n = len(sig)
    if n < 8 or sig[0] != 0x30 or sig[1] != n - 2:
        raise ValueError("ECDSA signature: not a SEQUENCE of %d bytes" % (n - 2))
    out = []
    i = 2
    for _ in range(2):
        k = sig[i + 1] if i + 2 <= n and sig[i] == 2 else 0
        if not 0 < k <= 33 or i + 2 + k > n:
            raise ValueError("ECDSA signature: bad INTEGER at byte %d" % i)
        out.append(int.from_bytes(bytes(sig[i + 2 : i + 2 + k]), "big"))
        i += 2 + k
    if i != n:
        raise ValueError("ECDSA signature: %d trailing bytes" % (n - i))
    return out
