"""CBOR (RFC 8949) of the small maps the stand-in answers with on Fleet Provisioning's .../cbor
topics."""


def cbor(obj):
    """CBOR (RFC 8949 §3.1) of a dict of str to str/int: rejections on a .../cbor topic."""
    def head(major, n):
        if n < 24:
            return bytes([major << 5 | n])
        size = 1 if n < 0x100 else 2 if n < 0x10000 else 4
        return bytes([major << 5 | {1: 24, 2: 25, 4: 26}[size]]) + n.to_bytes(size, "big")

    if isinstance(obj, int):
        return head(0, obj) if obj >= 0 else head(1, -1 - obj)
    if isinstance(obj, str):
        return head(3, len(obj.encode())) + obj.encode()
    return head(5, len(obj)) + b"".join(cbor(k) + cbor(v) for k, v in obj.items())
