# Corpus replay on the MicroPython unix port: `micropython replay_mp.py LISTING [lean]` with
# MICROPYPATH=firmware. Parses every file named in LISTING and prints one JSON line each: the
# reader's view (same keys as tests/fuzz/fwload.py view(), or view_lean() with `lean`: the lean
# reader certlean) or {"error": type, "message": ...}.
import gc
import hashlib
import json
import sys
from binascii import hexlify

from upcert.errors import CertificateError

LEAN = sys.argv[2:] == ["lean"]
if LEAN:
    from upcert import certlean
else:
    from upcert import x509


def _sha(b):
    return hexlify(hashlib.sha256(b).digest()).decode()


def _hex(b):
    return hexlify(b).decode() if b else None


def view_lean(data):
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
        "key_exp": c.key_exp, "sig_alg": c.sig_alg, "sig_alg_aws_ok": c.sig_alg_aws_ok,
        "cert_id": c.cert_id(), "signature_sha256": _sha(c.signature),
        "tbs_sha256": _sha(d[a[0]:a[1]]), "sig_alg_der": hexlify(d[a[2]:a[3]]).decode(),
        "issuer_der": hexlify(d[a[4]:a[5]]).decode(),
        "subject_der": hexlify(d[a[6]:a[7]]).decode(),
        "ski": _hex(c.ski), "aki": _hex(c.aki), "ext": ext,
    }


def view(data):
    if LEAN:
        return view_lean(data)
    try:
        c = x509.load(data)
    except CertificateError as exc:
        return {"error": "CertificateError", "message": str(exc)}
    except Exception as exc:  # a bug in the reader: report it, keep replaying
        return {"error": type(exc).__name__, "message": str(exc)}
    return {
        "serial": c.serial, "subject_cn": c.subject_cn, "issuer_cn": c.issuer_cn,
        "not_before": c.not_before, "not_after": c.not_after,
        "not_before_tuple": list(c.not_before_tuple), "not_after_tuple": list(c.not_after_tuple),
        "key_type": c.key_type, "key_bits": c.key_bits,
        "public_key": hexlify(c.public_key).decode(), "sig_alg": c.sig_alg,
        "sig_alg_aws_ok": c.sig_alg_aws_ok, "cert_id": c.cert_id(),
    }


def main(listing):
    with open(listing) as paths:  # one path a line, read as we go: the heap is small
        for line in paths:
            path = line.strip()
            with open(path, "rb") as f:
                data = f.read()
            gc.collect()
            r = view(data)
            r["path"] = path
            r["mem_free"] = gc.mem_free()
            print(json.dumps(r))
            data = r = None


main(sys.argv[1])
