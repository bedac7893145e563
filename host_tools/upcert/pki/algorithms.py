"""AWS IoT's certificate signature algorithms (AWS IoT Developer Guide, "X.509 client
certificates"): one table for host and board. It lives in the device's reader,
firmware/upcert/sigalgs.py (SIG_ALGS: dotted OID -> AWS's name); the host reads that literal from
the source with ast, so the two can never disagree."""

import ast

from cryptography.x509 import ObjectIdentifier

from upcert.paths import FIRMWARE

SOURCE = FIRMWARE / "upcert" / "sigalgs.py"


def _device_table():
    tree = ast.parse(SOURCE.read_text(), str(SOURCE))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
                "SIG_ALGS"]:
            return ast.literal_eval(node.value)
    raise RuntimeError(f"{SOURCE} has no SIG_ALGS table")  # a broken checkout, not user input


# dotted OID -> AWS's name, and the same keyed by cryptography's ObjectIdentifier
AWS_SIGNATURE_OIDS = _device_table()
AWS_SIGNATURE_ALGORITHMS = {ObjectIdentifier(k): v for k, v in AWS_SIGNATURE_OIDS.items()}
