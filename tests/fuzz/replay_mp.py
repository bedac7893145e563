# Corpus replay on the MicroPython unix port: `micropython replay_mp.py LISTING` with
# MICROPYPATH=firmware. Parses every file named in LISTING and prints one JSON line each: the
# reader's view (same keys as tests/fuzz/fwload.py view()) or {"error": type, "message": ...}.
# replay_lean_mp.py does the same with the lean reader (certlean).
import gc
import json
import sys
from binascii import hexlify

from upcert.errors import CertificateError


def view(data):
    from upcert import x509

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


def main(listing, view=view):
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


if __name__ == "__main__":
    main(sys.argv[1])
