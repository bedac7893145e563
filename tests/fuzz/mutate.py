"""Structure-aware mutations of DER certificates (X.690 framing) and hypothesis strategies that
draw them: truncation, byte flips, length-field lies (huge, indefinite, too many length bytes,
non-minimal, off by a little), tag changes, trailing or inserted bytes, nodes dropped,
duplicated or given new content with the enclosing lengths fixed up, and raw bytes.
"""

import base64
from functools import lru_cache

from hypothesis import strategies as st

from tests.fuzz.fwload import corpus_files

# Tags whose content we descend into: SEQUENCE, SET, [0]..[3] constructed (RFC 5280 §4.1).
_CONSTRUCTED = frozenset((0x30, 0x31, 0xA0, 0xA1, 0xA2, 0xA3))
_TAGS = (0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x13, 0x14, 0x16, 0x17, 0x18, 0x1C, 0x1E, 0x1F,
         0x30, 0x31, 0x80, 0xA0, 0xA3, 0xFF)


class Node:
    """One TLV: tag and either content bytes (primitive) or kids (constructed)."""

    __slots__ = ("tag", "content", "kids")

    def __init__(self, tag, content=b"", kids=None):
        self.tag, self.content, self.kids = tag, content, kids

    def copy(self):
        return Node(self.tag, self.content, None if self.kids is None else
                    [k.copy() for k in self.kids])


def header(tag, n):
    """Tag and minimal DER length (X.690 §8.1.3, §10.1)."""
    if n < 0x80:
        return bytes((tag, n))
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(b))) + b


def _read(data, pos, end):
    tag, n = data[pos], data[pos + 1]
    p = pos + 2
    if n & 0x80:
        w = n & 0x7F
        n, p = int.from_bytes(data[p : p + w], "big"), p + w
    if tag & 0x1F == 0x1F or p + n > end:
        raise ValueError("not DER")
    return tag, p, p + n


def parse(data, pos=0, end=None):
    """Tree of a well-formed DER element (our own parser, independent of the device's)."""
    end = len(data) if end is None else end
    tag, s, e = _read(data, pos, end)
    if e != end:
        raise ValueError("trailing bytes")
    return _node(data, tag, s, e)


def _node(data, tag, s, e):
    if tag not in _CONSTRUCTED:
        return Node(tag, bytes(data[s:e]))
    kids, p = [], s
    while p < e:
        t, cs, ce = _read(data, p, e)
        kids.append(_node(data, t, cs, ce))
        p = ce
    return Node(tag, kids=kids)


def encode(node):
    """DER bytes of a tree (lengths recomputed, so edits keep the framing consistent)."""
    body = node.content if node.kids is None else b"".join(encode(k) for k in node.kids)
    return header(node.tag, len(body)) + body


def paths(node, at=()):
    """Every node's path (indices from the root), the root first."""
    out = [at]
    for i, k in enumerate(node.kids or ()):
        out += paths(k, at + (i,))
    return out


def at_path(node, path):
    for i in path:
        node = node.kids[i]
    return node


def offsets(node, pos=0, at=()):
    """{path: (header offset, header length, content length)} in encode(node)."""
    n = len(node.content) if node.kids is None else sum(len(encode(k)) for k in node.kids)
    hl = len(header(node.tag, n))
    out = {at: (pos, hl, n)}
    p = pos + hl
    for i, k in enumerate(node.kids or ()):
        out.update(offsets(k, p, at + (i,)))
        p += len(encode(k))
    return out


# ---- length-field lies, applied to the encoded bytes at one node's header ----------------
def _lie(kind, n, extra):
    if kind == "huge":
        return b"\x84\xff\xff\xff\xff"
    if kind == "indefinite":
        return b"\x80"
    if kind == "too_many_bytes":  # 5..127 length bytes (X.690 allows, DER readers must bound)
        w = 5 + extra % 123
        return bytes((0x80 | w,)) + n.to_bytes(w, "big")
    if kind == "non_minimal":
        return b"\x82" + n.to_bytes(2, "big") if n < 0x10000 else b"\x84" + n.to_bytes(4, "big")
    if kind == "plus":
        return header(0, n + 1 + extra % 300)[1:]
    if kind == "minus":
        return header(0, max(0, n - 1 - extra % 300))[1:]
    return header(0, extra)[1:]  # "any": a length unrelated to the content


LIES = ("huge", "indefinite", "too_many_bytes", "non_minimal", "plus", "minus", "any")


def with_length(data, offset, header_len, n, kind, extra=0):
    """`data` with the length field of the element at `offset` replaced by a lie."""
    return data[: offset + 1] + _lie(kind, n, extra) + data[offset + header_len :]


@lru_cache(maxsize=1)
def seeds():
    """Every corpus input that is one well-formed DER element (a certificate, maybe a broken
    one inside: the mutations start from those as well)."""
    out = []
    for p in corpus_files():
        data = p.read_bytes()
        try:
            parse(data)
        except (ValueError, IndexError):
            continue
        out.append(data)
    if not out:
        raise RuntimeError("no well-formed seed in tests/fuzz/corpus/der: "
                           "run `python -m tests.fuzz.make_corpus`")
    return out


@st.composite
def mutated(draw, max_steps=3):
    """A corpus certificate after 1..max_steps structure-aware mutations."""
    data = draw(st.sampled_from(seeds()))
    for _ in range(draw(st.integers(1, max_steps))):
        data = _step(draw, data)
    return data


def _step(draw, data):
    # One mutation. Byte-level kinds work on anything; tree-level kinds need framing intact.
    kind = draw(st.sampled_from(("truncate", "flip", "length", "tag", "trailing", "drop",
                                 "dup", "content", "insert", "field", "field")))
    if kind == "truncate":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "flip":
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            if b:
                b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        return bytes(b)
    if kind == "trailing":
        return data + draw(st.binary(min_size=1, max_size=64))
    try:
        tree2 = parse(data)  # earlier steps may have broken the framing: then mutate bytes
    except (ValueError, IndexError):
        return data + b"\x00" if kind == "insert" else data[:-1]
    path = draw(st.sampled_from(paths(tree2)))
    if kind in ("length", "tag"):
        off, hl, n = offsets(tree2)[path]
        if kind == "tag":
            return data[:off] + bytes((draw(st.sampled_from(_TAGS)),)) + data[off + 1 :]
        lie = draw(st.sampled_from(LIES))
        return with_length(data, off, hl, n, lie, draw(st.integers(0, 1 << 16)))
    node = at_path(tree2, path)
    if kind == "field":  # a typed leaf (string, time, OID, ...) gets new content of its family
        typed = [p for p in paths(tree2) if at_path(tree2, p).tag in _FAMILY]
        if typed:
            node = at_path(tree2, draw(st.sampled_from(typed)))
            family = draw(st.sampled_from((_FAMILY[node.tag],) * 3 + tuple(_FIELDS)))
            node.tag, node.content = draw(_FIELDS[family])
    elif kind == "content" or node.kids is None and kind == "insert":
        node.kids, node.content = None, draw(_contents())
    elif not path:
        return data
    else:
        parent, i = at_path(tree2, path[:-1]), path[-1]
        if kind == "drop":
            del parent.kids[i]
        elif kind == "dup":
            parent.kids.insert(i, node.copy())
        else:  # insert a foreign element among the siblings, lengths fixed up
            parent.kids.insert(i, Node(draw(st.sampled_from(_TAGS)) & 0xDF, draw(_contents())))
    return encode(tree2)


def _contents():
    """Primitive contents that stress the decoders: long OID arcs, odd times, bad strings."""
    return st.one_of(
        st.binary(max_size=40),
        st.binary(min_size=1, max_size=2000).map(lambda b: bytes(x | 0x80 for x in b) + b"\x01"),
        st.sampled_from([b"", b"\x00", b"\x80", b"\xff" * 300, b"\x00" * 129, b"991231235959Z",
                         b"20501301000000Z", b"0000000000000Z", b"99999999999999Z",
                         b"\x00\xd8\x00", b"\xd8\x00\xdc\x00", b"\x00\x11\x00\x00", b"\xc0\x80"]),
    )


_STRING_TAGS = (0x0C, 0x13, 0x14, 0x16, 0x1C, 0x1E)  # UTF8, Printable, T61, IA5, Universal, BMP
_UNITS = (b"\x00\x00\x00a", b"\x00\x01\xf6\x00", b"\x00\x10\xff\xff", b"\x00\x11\x00\x00",
          b"\xff\xff\xff\xff", b"\x80\x00\x00\x00", b"\xd8\x3d\xde\x00", b"\xdc\x00\xd8\x00",
          b"\x00\xe9", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\x80", b"\xe2\x82\xac")


_FIELDS = {
    "string": st.tuples(st.sampled_from(_STRING_TAGS),
                        st.lists(st.sampled_from(_UNITS) | st.binary(max_size=4), max_size=8)
                        .map(b"".join)),
    "time": st.tuples(st.sampled_from((0x17, 0x18)),
                      st.text("0123456789Z+-.", max_size=17).map(str.encode)),
    "oid": st.tuples(st.just(0x06), _contents()),
    "number": st.tuples(st.sampled_from((0x02, 0x03)), st.binary(max_size=20)),
}
_FAMILY = {t: "string" for t in _STRING_TAGS}
_FAMILY.update({0x17: "time", 0x18: "time", 0x06: "oid", 0x02: "number", 0x03: "number"})


def pem(der, label="CERTIFICATE"):
    """PEM text for DER bytes (64-column base64)."""
    b64 = base64.b64encode(der).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode()


@st.composite
def pem_inputs(draw):
    """PEM wrappers: of a mutated certificate, or damaged (bad base64, no END, empty)."""
    der = draw(mutated(max_steps=1))
    text = pem(der)
    kind = draw(st.sampled_from(("plain", "cut", "junk", "empty", "noend")))
    if kind == "cut":
        return text[: draw(st.integers(11, max(11, len(text) - 1)))]
    if kind == "junk":
        i = draw(st.integers(28, max(28, len(text) - 26)))
        return text[:i] + draw(st.binary(min_size=1, max_size=8)) + text[i:]
    if kind == "empty":
        return b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"
    if kind == "noend":
        return text.split(b"-----END")[0]
    return text


def raw_bytes():
    """Unstructured inputs: random bytes, and random bytes behind a SEQUENCE header."""
    return st.one_of(
        st.binary(max_size=600),
        st.binary(max_size=600).map(lambda b: header(0x30, len(b)) + b),
        st.tuples(st.integers(0, 1 << 32), st.binary(max_size=64)).map(
            lambda t: b"\x30\x84" + t[0].to_bytes(5, "big")[1:] + t[1]),
    )


def inputs():
    """Everything the property tests draw from."""
    return st.one_of(mutated(), mutated(), mutated(), pem_inputs(), raw_bytes())
