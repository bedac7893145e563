# Corpus replay of the lean certificate reader (certlean) on the MicroPython unix port:
# `micropython -m replay_lean_mp LISTING` with MICROPYPATH=firmware, as replay_mp.py: one JSON
# line per file, the same keys as tests/fuzz/fwload.py view_lean().
import sys
from binascii import hexlify

from replay_mp import main
from upcert import certlean
from upcert.errors import CertificateError
from upcert.sigalgs import SIG_ALGS


def _sha(b):
    import hashlib

    return hexlify(hashlib.sha256(b).digest()).decode()


def _hex(b):
    return hexlify(b).decode() if b else None


def view(data):
    try:
        c = certlean.load(data)
        ext = [[certlean.oid(o, 0, len(o)), crit, hexlify(v).decode()]
               for o, crit, v in c.extensions()]
    except CertificateError as exc:
        return {"error": "CertificateError", "message": str(exc)}
    except Exception as exc:  # a bug in the reader: report it, keep replaying
        return {"error": type(exc).__name__, "message": str(exc)}
    a = c._at
    d = memoryview(c.der)
    return {
        "subject_cn": c.subject_cn, "issuer_cn": c.issuer_cn,
        "not_before": c.not_before, "not_after": c.not_after,
        "key_type": c.key_type, "key_bits": c.key_bits, "public_key": hexlify(c.public_key).decode(),
        "key_exp": c.key_exp, "sig_alg": SIG_ALGS.get(c.sig_oid, c.sig_oid),
        "sig_alg_aws_ok": c.sig_oid in SIG_ALGS,
        "cert_id": c.cert_id(), "signature_sha256": _sha(c.signature),
        "tbs_sha256": _sha(d[a[0]:a[1]]), "sig_alg_der": hexlify(d[a[2]:a[3]]).decode(),
        "issuer_der": hexlify(d[a[4]:a[5]]).decode(),
        "subject_der": hexlify(d[a[6]:a[7]]).decode(),
        "ski": _hex(c.ski), "aki": _hex(c.aki), "ext": ext,
    }


main(sys.argv[1], view)
