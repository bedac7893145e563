# Minimal DER (X.690) writer: the few encoders a key file, an ECDSA signature and a PKCS#10
# request need, and the P-256 key AlgorithmIdentifier both write. Pure (values in, bytes out). The reader is upcert.der.
from micropython import const

# DER tags (X.690 §8.1.2), as in der.py: writing needs no reader in RAM
INTEGER = const(0x02)
OID = const(0x06)
SEQUENCE = const(0x30)
# DER of AlgorithmIdentifier {id-ecPublicKey, prime256v1} (RFC 5480 §2.1.1): a P-256 public key
# (csr.py) or private key (p256.py).
EC_ALG = b"\x30\x13\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"


def tlv(tag, body):
    """One element: tag, definite length (X.690 §8.1.3, short form below 128), body."""
    n = len(body)
    if n < 0x80:
        head = bytes((tag, n))
    elif n < 0x100:
        head = bytes((tag, 0x81, n))
    elif n < 0x10000:
        head = bytes((tag, 0x82, n >> 8, n & 0xFF))
    else:
        raise ValueError("DER element of %d bytes: over the 64 KB this writer supports" % n)
    return head + body


def seq(*parts):
    """SEQUENCE of already encoded parts."""
    return tlv(SEQUENCE, b"".join(parts))


def uint(v):
    """INTEGER for a non-negative int, minimal two's complement (X.690 §8.3.2)."""
    if v < 0:
        raise ValueError("DER INTEGER: %d is negative (only unsigned values are written)" % v)
    n = 1
    while v >> (8 * n - 1):  # room for the value plus a 0 sign bit (no int.bit_length here)
        n += 1
    return tlv(INTEGER, v.to_bytes(n, "big"))


def oid(dotted):
    """OBJECT IDENTIFIER from its dotted string, e.g. "2.5.29.17" (X.690 §8.19)."""
    try:
        arcs = [int(a) for a in dotted.split(".")]
    except ValueError:
        arcs = ()
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39) or min(arcs) < 0:
        raise ValueError("bad OID %r: want dotted decimal like '2.5.29.17'" % (dotted,))
    top = arcs.pop(0)
    arcs[0] += 40 * top  # the first two arcs share one subidentifier (§8.19.4)
    out = bytearray()
    for a in arcs:
        part = bytes((a & 0x7F,))
        a >>= 7
        while a:  # base 128, big-endian; the high bit marks "more follows"
            part = bytes((0x80 | (a & 0x7F),)) + part
            a >>= 7
        out += part
    return tlv(OID, bytes(out))
