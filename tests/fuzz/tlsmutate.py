"""Hypothesis strategies for malformed TLS 1.2 server flights (tests/fuzz/tlsflight.py): a
recorded flight changed at the record layer (headers, lengths, splits, inserted alerts and
records, truncation), in its handshake messages (types, lengths, ServerHello fields and
extensions, the certificate list and the certificates' bytes, ServerKeyExchange fields,
CertificateRequest), after ChangeCipherSpec, or only in how the reads are cut.

A case is (data, steps, harmless, label): steps are the sizes the scripted socket's reads
return; harmless cases keep every byte a client hashes or decrypts (records re-cut, record
version minor bytes, HelloRequests, warning alerts) and must complete the handshake.
"""

from hypothesis import strategies as st

from tests.fuzz.tlsflight import join, records

SUITES = [0xC02B, 0xC02F, 0xC023, 0xC027, 0xC030, 0xC02C, 0x009C, 0x1301, 0x0000, 0xFFFF]
EXTENSIONS = [0, 5, 10, 11, 13, 16, 23, 35, 43, 0xFF01, 0xFFFF]
SIG_ALGS = [0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0201,
            0x0807, 0x0000]
HS_TYPES = [0, 1, 2, 4, 11, 12, 13, 14, 15, 16, 20, 22, 255]


class Flight:
    """A recorded flight cut into: the server's handshake messages before ChangeCipherSpec
    (each with its 4-byte header), the record sizes they came in, and the rest (raw)."""

    def __init__(self, data):
        recs = records(data)
        k = next(i for i, r in enumerate(recs) if r[0] == 20)
        self.data = bytes(data)
        self.sizes = [len(r[2]) for r in recs[:k]]
        hs = b"".join(r[2] for r in recs[:k])
        self.msgs, i = [], 0
        while i < len(hs):
            n = int.from_bytes(hs[i + 1:i + 4], "big")
            self.msgs.append(hs[i:i + 4 + n])
            i += 4 + n
        self.post = join(recs[k:])
        self.hs_len = len(hs)

    def frame(self, hs, sizes=None):
        """hs (a handshake byte stream) in records of the given sizes (the original ones by
        default; the last record takes the rest), then the rest of the flight."""
        out, i = [], 0
        for n in sizes or self.sizes:
            if i >= len(hs):
                break
            out.append((22, 3, hs[i:i + n]))
            i += n
        while i < len(hs):
            out.append((22, 3, hs[i:i + 16384]))
            i += 16384
        return join(out) + self.post


def fields(msg):
    """[(name, offset, width, is_length)] of a handshake message's fields the client reads."""
    out = [("hs.type", 0, 1, False), ("hs.length", 1, 3, True)]
    t, b, n = msg[0], 4, len(msg)
    try:
        if t == 2:  # ServerHello: version, random, session id, suite, compression, extensions
            sid = msg[b + 34]
            out += [("sh.version", b, 2, False), ("sh.session_id_len", b + 34, 1, True),
                    ("sh.suite", b + 35 + sid, 2, False), ("sh.compression", b + 37 + sid, 1,
                                                             False),
                    ("sh.extensions_len", b + 38 + sid, 2, True)]
            i = b + 40 + sid
            while i + 4 <= n:
                out += [("sh.ext.type", i, 2, False), ("sh.ext.len", i + 2, 2, True)]
                i += 4 + int.from_bytes(msg[i + 2:i + 4], "big")
        elif t == 11:  # Certificate: list length, each certificate's length and DER header
            out.append(("cert.list_len", b, 3, True))
            i = b + 3
            while i + 3 <= n:
                out += [("cert.len", i, 3, True), ("cert.der_tag", i + 3, 1, False),
                        ("cert.der_len", i + 4, 3, True)]
                i += 3 + int.from_bytes(msg[i:i + 3], "big")
        elif t == 12:  # ServerKeyExchange: curve type, named curve, point, signature
            pl = msg[b + 3]
            out += [("ske.curve_type", b, 1, False), ("ske.named_curve", b + 1, 2, False),
                    ("ske.point_len", b + 3, 1, True), ("ske.point_form", b + 4, 1, False),
                    ("ske.sig_alg", b + 4 + pl, 2, False), ("ske.sig_len", b + 6 + pl, 2, True),
                    ("ske.sig_der", b + 8 + pl, 2, False)]
        elif t == 13:  # CertificateRequest: types, signature algorithms, authorities
            tl = msg[b]
            al = int.from_bytes(msg[b + 1 + tl:b + 3 + tl], "big")
            out += [("cr.types_len", b, 1, True), ("cr.type", b + 1, 1, False),
                    ("cr.algs_len", b + 1 + tl, 2, True), ("cr.alg", b + 3 + tl, 2, False),
                    ("cr.cas_len", b + 3 + tl + al, 2, True)]
    except IndexError:
        pass
    return [f for f in out if f[1] + f[2] <= n]


def _value(draw, name, old, width, is_length):
    top = (1 << (8 * width)) - 1
    if is_length:
        return draw(st.one_of(st.sampled_from([v for v in (0, 1, top, 16384, 16385, 24576, 24577)
                                               if v <= top]),
                              st.integers(-4, 4).map(lambda d: max(0, min(top, old + d))),
                              st.integers(0, top)))
    pool = {"sh.suite": SUITES, "sh.ext.type": EXTENSIONS, "ske.sig_alg": SIG_ALGS,
            "hs.type": HS_TYPES, "sh.version": [0x0301, 0x0302, 0x0304, 0x0203, 0x0403],
            "ske.named_curve": [23, 24, 25, 29, 30], "ske.curve_type": [1, 2, 3],
            "ske.point_form": [2, 3, 4, 0], "cr.type": [1, 2, 64, 65, 66],
            "cr.alg": SIG_ALGS}.get(name, [0, 1, top])
    return draw(st.one_of(st.sampled_from([v for v in pool if v <= top]), st.integers(0, top)))


def _steps():
    return st.one_of(st.just([4096]), st.lists(st.sampled_from([1, 2, 3, 5, 7, 64, 300]),
                                                min_size=1, max_size=8))


@st.composite
def harmless(draw, flight):
    """The flight re-cut: handshake records of other sizes, their version minor bytes changed,
    HelloRequests between messages, warning alerts between records; reads cut otherwise."""
    f = Flight(flight)
    hs = b""
    for m in f.msgs:
        if draw(st.integers(0, 4)) == 0:
            hs += b"\x00\x00\x00\x00"  # HelloRequest: ignored during a handshake (§7.4.1.1)
        hs += m
    sizes = draw(st.one_of(st.just([16384]), st.lists(st.integers(1, 600), min_size=1,
                                                       max_size=12)))
    recs, i, k = [], 0, 0
    while i < len(hs):
        n = sizes[k % len(sizes)]
        k += 1
        if draw(st.integers(0, 5)) == 0:  # a warning alert: not close_notify, not no_reneg.
            recs.append((21, None, bytes((1, draw(st.sampled_from([10, 42, 44, 45, 46, 90,
                                                                   112, 200]))))))
        recs.append((22, draw(st.sampled_from([3, 3, 3, 1, 0, 4, 255])), hs[i:i + n]))
        i += n
    return join(recs) + f.post, draw(_steps()), True, "harmless"


@st.composite
def malformed(draw, flight):
    """The flight with one change a client might trip on (see the module's docstring)."""
    f = Flight(flight)
    kind = draw(st.sampled_from(["field", "field", "field", "flip", "bytes", "truncate",
                                 "record_len", "messages", "extension", "certs", "insert",
                                 "post", "tail"]))
    data = f.data
    if kind == "field":
        mi = draw(st.integers(0, len(f.msgs) - 1))
        msg = bytearray(f.msgs[mi])
        name, off, width, is_len = draw(st.sampled_from(fields(msg)))
        old = int.from_bytes(msg[off:off + width], "big")
        msg[off:off + width] = _value(draw, name, old, width, is_len).to_bytes(width, "big")
        kind = name
        data = f.frame(b"".join(f.msgs[:mi]) + bytes(msg) + b"".join(f.msgs[mi + 1:]))
    elif kind == "flip":
        b = bytearray(data)
        i = draw(st.integers(0, len(b) - 1))
        b[i] ^= draw(st.integers(1, 255))
        data = bytes(b)
    elif kind == "bytes":  # a run replaced, inserted or deleted
        i = draw(st.integers(0, len(data)))
        run = draw(st.binary(min_size=1, max_size=16))
        how = draw(st.sampled_from(["replace", "insert", "delete"]))
        j = i + len(run) if how != "insert" else i
        data = data[:i] + (run if how != "delete" else b"") + data[j:]
        kind = "bytes." + how
    elif kind == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == "record_len":
        recs = records(data)
        ri = draw(st.integers(0, len(recs) - 1))
        off = sum(5 + len(r[2]) for r in recs[:ri]) + 3
        n = _value(draw, "record.len", len(recs[ri][2]), 2, True)
        data = data[:off] + n.to_bytes(2, "big") + data[off + 2:]
    elif kind == "messages":
        msgs = list(f.msgs)
        how = draw(st.sampled_from(["drop", "duplicate", "swap", "insert"]))
        i = draw(st.integers(0, len(msgs) - 1))
        if how == "drop":
            del msgs[i]
        elif how == "duplicate":
            msgs.insert(i, msgs[i])
        elif how == "swap":
            j = draw(st.integers(0, len(msgs) - 1))
            msgs[i], msgs[j] = msgs[j], msgs[i]
        else:
            body = draw(st.binary(max_size=40))
            msgs.insert(i, bytes((draw(st.sampled_from(HS_TYPES)),)) + len(body).to_bytes(3, "big")
                        + body)
        kind = "messages." + how
        data = f.frame(b"".join(msgs), [16384])
    elif kind == "extension":  # ServerHello rebuilt with its extensions changed
        sh = f.msgs[0]
        sid = sh[4 + 34]
        head, exts, i = sh[4:4 + 38 + sid], [], 4 + 40 + sid
        while i + 4 <= len(sh):
            n = int.from_bytes(sh[i + 2:i + 4], "big")
            exts.append(sh[i:i + 4 + n])
            i += 4 + n
        how = draw(st.sampled_from(["add", "drop", "duplicate", "none"]))
        if how == "add":
            t = draw(st.sampled_from(EXTENSIONS))
            body = draw(st.one_of(
                st.binary(max_size=12),
                st.binary(min_size=1, max_size=10).map(  # ALPN-shaped (RFC 7301 §3.1)
                    lambda p: (len(p) + 1).to_bytes(2, "big") + bytes((len(p),)) + p)))
            exts.insert(draw(st.integers(0, len(exts))), t.to_bytes(2, "big")
                        + len(body).to_bytes(2, "big") + body)
        elif how == "drop" and exts:
            del exts[draw(st.integers(0, len(exts) - 1))]
        elif how == "duplicate" and exts:
            exts.append(exts[draw(st.integers(0, len(exts) - 1))])
        body = head + (b"" if how == "none" else len(b"".join(exts)).to_bytes(2, "big")
                       + b"".join(exts))
        msg = b"\x02" + len(body).to_bytes(3, "big") + body
        kind = "extension." + how
        data = f.frame(msg + b"".join(f.msgs[1:]), [16384])
    elif kind == "certs":  # Certificate rebuilt with its list changed
        cm = f.msgs[1]
        certs, i = [], 7
        while i + 3 <= len(cm):
            n = int.from_bytes(cm[i:i + 3], "big")
            certs.append(cm[i + 3:i + 3 + n])
            i += 3 + n
        how = draw(st.sampled_from(["empty", "junk", "cut", "flip", "duplicate", "reverse"]))
        if how == "empty":
            certs = []
        elif how == "junk":
            certs.insert(draw(st.integers(0, len(certs))), draw(st.binary(max_size=60)))
        elif how == "cut":
            c = draw(st.integers(0, len(certs) - 1))
            certs[c] = certs[c][:draw(st.integers(0, len(certs[c]) - 1))]
        elif how == "flip":
            c = draw(st.integers(0, len(certs) - 1))
            b = bytearray(certs[c])
            b[draw(st.integers(0, len(b) - 1))] ^= draw(st.integers(1, 255))
            certs[c] = bytes(b)
        elif how == "duplicate":
            certs = certs + certs
        else:
            certs = certs[::-1] + [certs[0]]
        lst = b"".join(len(c).to_bytes(3, "big") + c for c in certs)
        body = len(lst).to_bytes(3, "big") + lst
        kind = "certs." + how
        data = f.frame(f.msgs[0] + b"\x0b" + len(body).to_bytes(3, "big") + body
                       + b"".join(f.msgs[2:]), [16384])
    elif kind == "insert":  # a record where none belongs
        recs = records(data)
        t = draw(st.sampled_from([20, 21, 21, 22, 23, 24, 0]))
        body = draw(st.one_of(
            st.tuples(st.integers(0, 3), st.sampled_from(sorted({0, 10, 20, 40, 100, 255})))
            .map(bytes), st.binary(max_size=24)))
        recs.insert(draw(st.integers(0, len(recs))), (t, draw(st.sampled_from([3, 1])), body))
        data = join(recs)
        kind = f"insert.{t}"
    elif kind == "post":  # ChangeCipherSpec, the encrypted Finished, the application record
        recs = records(data)
        k = next(i for i, r in enumerate(recs) if r[0] == 20)
        i = draw(st.integers(k, len(recs) - 1))
        how = draw(st.sampled_from(["flip", "drop", "duplicate", "type"]))
        t, v, body = recs[i]
        if how == "flip" and body:
            b = bytearray(body)
            b[draw(st.integers(0, len(b) - 1))] ^= draw(st.integers(1, 255))
            recs[i] = (t, v, bytes(b))
        elif how == "drop":
            del recs[i]
        elif how == "duplicate":
            recs.insert(i, recs[i])
        else:
            recs[i] = (draw(st.sampled_from([20, 21, 22, 23])), v, body)
        data = join(recs)
        kind = "post." + how
    else:  # garbage after the flight, or in place of it
        junk = draw(st.binary(max_size=64))
        data = data + junk if draw(st.booleans()) else junk
    return data, draw(_steps()), False, kind
