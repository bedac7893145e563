# What an MQTT client hands over instead of a payload too big to hold in RAM (mqtt.py reads it
# past in pieces and feeds it here): its length and the few JSON members a reply to it needs.
# A module of its own, loaded only when such a payload arrives.
import json

from micropython import const

_FIELDS = const(20)  # JSON members a Big keeps (a start-next reply has 13 at depth 1-2)
_TOKEN = const(80)  # longest key or value a Big keeps (bytes of JSON text: a quoted 64-char jobId)


class Big:
    """A payload not held in RAM: what the callback gets instead of one over the client's limit
    (read past in pieces, never whole); jobs.py also makes one for a payload it cannot parse.
    n: its length in bytes; limit: the limit it broke. feed(bytes) scans the JSON text piece by
    piece in constant memory, keeping the first _FIELDS members at depth 1-2 (of the top object
    and of objects in it): the key and a scalar value of at most _TOKEN bytes. get(name, depth)
    -> the first such value of a member at that depth (str, int, ...) or None; `q in big`, as for bytes, for a quoted key or string
    value q such as b'"execution"' (and b""), so a Big passes where bytes are searched."""

    def __init__(self, n, limit):
        self.n = n
        self.limit = limit
        self.fields = []  # (key, value or None, depth): tokens as in the JSON text, quoted
        # depth, in a string (1; 2 after a backslash), token kept, key read, string read last
        self._st = [0, 0, None, None, None]

    def feed(self, buf):
        st = self._st
        d, s, t, k, last = st
        for c in buf:
            if s:  # in a string: only its end and escapes count
                if t is not None:
                    if len(t) < _TOKEN:
                        t.append(c)
                    else:
                        t = None  # too long to keep
                if s == 2:
                    s = 1
                elif c == 92:  # backslash
                    s = 2
                elif c == 34:  # closing quote
                    s = 0
                    if 0 < d < 3:
                        if k is None:
                            last = t and bytes(t)  # a key, if ':' follows
                        else:
                            k = self._keep(k, t, d)
                    t = None
            elif c == 34:
                s = 1
                t = bytearray(b'"') if 0 < d < 3 else None
            elif c == 123 or c == 91:  # { [
                if k is not None:
                    k = self._keep(k, None, d)
                d += 1
            elif c == 58:  # ':'
                if 0 < d < 3 and last:
                    k, last, t = last, None, bytearray()  # t: a scalar value, if one follows
            elif c == 44 or c == 125 or c == 93:  # , } ]
                if k is not None:
                    k = t = self._keep(k, t, d)
                if c != 44:
                    d -= 1
            elif k is not None and t is not None and c > 32:  # a number, true, false, null
                if len(t) < _TOKEN:
                    t.append(c)
                else:
                    t = None
        st[0] = d
        st[1] = s
        st[2] = t
        st[3] = k
        st[4] = last

    def _keep(self, k, t, d):
        # One member: key k, value token t (None: not kept), at depth d. Returns None.
        if len(self.fields) < _FIELDS:
            self.fields.append((k, t and bytes(t), d))

    def get(self, name, depth):
        q = b'"%s"' % name
        for k, v, d in self.fields:
            if k == q and d == depth:
                try:
                    return json.loads(v)
                except (TypeError, ValueError):
                    return None
        return None

    def __contains__(self, q):
        if not q:
            return True
        for k, v, _ in self.fields:
            if q == k or q == v:
                return True
        return False
