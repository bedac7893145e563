# Device configuration (/upcert.d/config.json, written by `upcert provision`): load, check every
# field against AWS IoT limits, and fill the defaults listed in docs/ARCHITECTURE.md.
import json

from micropython import const

from upcert.errors import ConfigError

PATH = "/upcert.d/config.json"
# (field, default, min, max): keepalive 30..1200 s is the range AWS IoT accepts.
# max_message_bytes: the largest payload the device holds in RAM (mqtt.py skips a bigger one by
# its length and the agent answers it); AWS IoT's own limit is 128 KB, and below 4096 bytes a
# Fleet Provisioning reply (certificate PEM + ownership token, ~3 KB) would not fit.
# queue: telemetry messages kept in RAM until acknowledged (agent.py), ~300 bytes each.
_INTS = const((
    ("port", 8883, 1, 65535),
    ("telemetry_interval_s", 60, 1, 86400),
    ("keepalive_s", 60, 30, 1200),
    ("max_message_bytes", 4096, 4096, 131072),
    ("queue", 8, 1, 64),
))
# "renew" (renew.py): key, default, min, max. 30 days: Device Defender's
# DEVICE_CERTIFICATE_EXPIRING_CHECK default; days or fraction 0 turns that rule off.
_RENEW = const((
    ("days", 30, 0, 3650),
    ("fraction", 0.2, 0, 0.9),
    ("jitter_s", 3600, 0, 604800),
))
_SUBJECT = const(("O", "OU", "C", "ST", "L", "serialNumber"))  # CN is always the thing name
_TEMPLATE = const("upcert-rotation")  # AWS provisioning template names: [0-9A-Za-z_-], <= 36 chars


def _fail(path, msg):
    return ConfigError("config %s: %s" % (path, msg))


def _text(v, n):
    # A str of 1..n UTF-8 bytes.
    return type(v) is str and 1 <= len(v.encode()) <= n


def validate(cfg, path=PATH):
    """Check a config dict and return a new dict with defaults filled in. Raises ConfigError."""
    if type(cfg) is not dict:
        raise _fail(path, "must be a JSON object, got %s" % type(cfg).__name__)
    c = dict(cfg)
    for key in ("thing", "endpoint"):
        if key not in c:
            raise _fail(path, "'%s' missing" % key)
    c.setdefault("client_id", c["thing"])
    # AWS IoT: client id <= 128 bytes; '+', '#', '/' would break per-thing topics and ACLs.
    for key in ("thing", "client_id"):
        v = c[key]
        if not _text(v, 128):
            raise _fail(path, "'%s' must be a string of 1..128 bytes, got %r" % (key, v))
        for ch in "+#/":
            if ch in v:
                raise _fail(path, "'%s' %r must not contain '%s'" % (key, v, ch))
    v = c["endpoint"]
    if not _text(v, 253) or " " in v or "/" in v or ":" in v:
        raise _fail(
            path, "'endpoint' must be a bare host name (no scheme, port or path), got %r" % (v,)
        )
    for key, default, lo, hi in _INTS:
        v = c.setdefault(key, default)
        if type(v) is not int or not lo <= v <= hi:
            raise _fail(path, "'%s' must be an integer %d..%d, got %r" % (key, lo, hi, v))
    v = c.setdefault("store", {"kind": "fs"})
    if type(v) is not dict or type(v.get("kind")) is not str:
        raise _fail(path, "'store' must be an object with a 'kind' string, got %r" % (v,))
    if v["kind"] == "atecc608":
        _atecc(v, path)
    tp = c.get("topics", {})
    if type(tp) is not dict:
        raise _fail(path, "'topics' must be an object, got %r" % (tp,))
    c["topics"] = tp = dict(tp)
    for name in ("telemetry", "commands", "replies"):
        # AWS IoT: topic <= 256 bytes and <= 7 '/'; no wildcards in topics we publish to.
        v = tp.setdefault(name, "things/%s/%s" % (c["thing"], name))
        if not _text(v, 256) or v.count("/") > 7 or "+" in v or "#" in v:
            raise _fail(
                path,
                "topic '%s' must be 1..256 bytes, at most 7 '/', no '+' or '#'; got %r" % (name, v),
            )
    # "alpn" (RFC 7301): protocols offered in the TLS handshake; AWS IoT serves MQTT on port
    # 443 only to clients that offer x-amzn-mqtt-ca, so that is the default there. "tls": which
    # TLS client connects: "builtin" (the port's tls module), "upcert" (tls12.py), or "auto"
    # (upcert's when the key stays in a secure element or ALPN is asked for; app.connector).
    v = c.setdefault("alpn", ["x-amzn-mqtt-ca"] if c["port"] == 443 else [])
    if (type(v) is not list or [n for n in v if not _text(n, 255)]
            or c.setdefault("tls", "auto") not in ("auto", "builtin", "upcert")):
        raise _fail(path, "'alpn' must be a list of protocol names and 'tls' one of auto, "
                    "builtin, upcert; got %r and %r" % (v, c["tls"]))
    v = c.get("wifi")
    if v is not None and (
        type(v) is not dict
        or not _text(v.get("ssid"), 32)
        or type(v.get("password", "")) is not str
    ):
        raise _fail(
            path, "'wifi' must be an object with 'ssid' (1..32 bytes) and a string 'password'"
        )
    _rotation(c, path)
    return c


def _atecc(v, path):
    # Store "atecc608" (store_atecc.py): 7-bit I2C address, key slots 0..15, ESP32 GPIOs, and
    # where the certificate lives.
    for key, lo, hi in (("address", 8, 0x77), ("slot", 0, 15), ("sda", 0, 39), ("scl", 0, 39)):
        x = v.get(key, lo)
        if type(x) is not int or not lo <= x <= hi:
            raise _fail(path, "'store.%s' must be an integer %d..%d, got %r" % (key, lo, hi, x))
    x = v.get("spares", [])
    if type(x) is not list or [n for n in x if type(n) is not int or not 0 <= n <= 15]:
        raise _fail(path, "'store.spares' must be a list of key slots 0..15, got %r" % (x,))
    if v.get("cert", "fs") not in ("fs", "slot8"):
        raise _fail(path, "'store.cert' must be \"fs\" or \"slot8\", got %r" % (v["cert"],))


def _obj(c, key, path, default):
    # An optional object field: a copy with defaults; unknown keys are refused (typos).
    v = c.get(key, {})
    if type(v) is not dict:
        raise _fail(path, "'%s' must be an object, got %r" % (key, v))
    for k in v:
        if k not in default:
            raise _fail(path, "'%s.%s' unknown: use %s" % (key, k, ", ".join(default)))
    d = dict(default)
    d.update(v)
    c[key] = d
    return d


def _rotation(c, path):
    # "renew": when to rotate (renew.py); "fleet": how (fleet.py, rotation.py).
    r = _obj(c, "renew", path, {k: d for k, d, _, _ in _RENEW})
    for key, _, lo, hi in _RENEW:
        v = r[key]
        if type(v) not in (int, float) or not lo <= v <= hi:
            raise _fail(path, "'renew.%s' must be a number %s..%s, got %r" % (key, lo, hi, v))
    f = _obj(
        c,
        "fleet",
        path,
        {"template": _TEMPLATE, "subject": [], "parameters": {}, "timeout_s": 30},
    )
    v = f["template"]
    if v is not None and (
        type(v) is not str
        or not 0 < len(v) <= 36
        or [ch for ch in v if not (ch.isalpha() or ch.isdigit() or ch in "_-")]
    ):
        raise _fail(
            path,
            "'fleet.template' must be null or a template name ([0-9A-Za-z_-], 1..36), got %r"
            % (v,),
        )
    v = f["subject"]
    if type(v) is not list or [
        p
        for p in v
        if type(p) is not list or len(p) != 2 or p[0] not in _SUBJECT or not _text(p[1], 128)
    ]:
        raise _fail(
            path,
            "'fleet.subject' must be a list of [attribute, value] pairs, attribute one of %s; got %r"
            % (", ".join(_SUBJECT), v),
        )
    v = f["parameters"]
    if type(v) is not dict or [k for k in v if type(v[k]) is not str]:
        raise _fail(path, "'fleet.parameters' must map names to strings, got %r" % (v,))
    v = f["timeout_s"]
    if type(v) is not int or not 1 <= v <= 300:
        raise _fail(path, "'fleet.timeout_s' must be an integer 1..300, got %r" % (v,))


def load(path=PATH):
    """Read and validate the JSON config at `path`; returns a dict with defaults filled in."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise _fail(path, "cannot read (%s): run `upcert provision` to write it" % exc) from None
    try:
        cfg = json.loads(text)
    except ValueError as exc:
        raise _fail(path, "not valid JSON (%s)" % exc) from None
    return validate(cfg, path)


def dumps(cfg):
    """JSON text of a config dict."""
    return json.dumps(cfg)
