"""Checks made before anything is written (to a board, the registry or $UPCERT_HOME), shared by
the CLI and the library, and the rule for upcert's own state: folders 0700, files 0600.

Every check raises InputError (an UpcertError) with one line saying what is accepted; values are
shown with repr(), shortened, so a newline or a stray byte in an input cannot split the line.
"""

import ast
import functools
import os
import re
from pathlib import Path

from upcert.errors import UpcertError
from upcert.paths import FIRMWARE

# AWS IoT CreateThing thingName pattern (AWS IoT API Reference): also the MQTT client id, the
# topic prefix and, with the local CA, the certificate's CN.
THING_RE = re.compile(r"[A-Za-z0-9:_-]{1,128}")
CN_MAX = 64  # X.509 ub-common-name (RFC 5280, Appendix A.1): the local CA puts the thing there
BOARD_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # an emulated board's name: a folder name
HOST_MAX = 253  # a DNS name in text form (RFC 1035 §2.3.4: 255 octets on the wire)
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # RFC 1123 §2.1
_DIGITS_RE = re.compile(r"-?[0-9]+")  # ASCII only: int() also takes '٣' (Arabic-Indic 3)
# The device's own limits (firmware/upcert/config.py _INTS, read from there when the repository
# is at hand): a value outside them would be refused by the board only after config.json had
# been written.
DEVICE_CONFIG = FIRMWARE / "upcert" / "config.py"
TELEMETRY_S = (1, 86400)
KEEPALIVE_S = (30, 1200)
PORT = (1, 65535)
QUEUE = (1, 64)  # telemetry messages kept in RAM until acknowledged (the agent's queue)
_INTS = {"port": PORT, "telemetry_interval_s": TELEMETRY_S, "keepalive_s": KEEPALIVE_S,
         "queue": QUEUE}
# Validity of a local-CA certificate: at most 10 years, the local CA's own lifetime (pki/ca.py
# _CA_DAYS) and the device's "renew.days" maximum.
DAYS = (1, 3650)
SSID_MAX = 32  # IEEE 802.11 SSID, bytes
PASSWORD_MAX = 64  # WPA2: 8..63 characters of passphrase, or 64 hex digits
STORE_KINDS = ("fs", "nvs", "partition", "atecc608")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class InputError(UpcertError):
    """An input upcert refuses before writing anything; the message says what is accepted."""


def shown(value, limit=40, length=True):
    """repr(value), cut after `limit` characters (then with its length, unless not length)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}..." + (f" ({len(value)} characters)" if length else "")
    return repr(value)


def _first_bad(text, allowed):
    """Why `text` does not match: its first character outside `allowed` (a regex class)."""
    for ch in text:
        if not re.fullmatch(allowed, ch):
            return f"contains {ch!r}"
    return "is not valid"


# ---- names --------------------------------------------------------------------------------
def thing_name(name, *, local_ca=False):
    """A thing name as AWS IoT takes it (1-128 of A-Z a-z 0-9 : _ -); local_ca: it also
    becomes the CN of a local-CA certificate, so at most 64 characters."""
    if not isinstance(name, str) or not THING_RE.fullmatch(name):
        if not isinstance(name, str):
            why = f"is a {type(name).__name__}"
        elif not name:
            why = "is empty"
        elif len(name) > 128:
            why = f"has {len(name)} characters (at most 128)"
        else:
            why = _first_bad(name, r"[A-Za-z0-9:_-]")
        raise InputError(f"thing name {shown(name, length=False)} {why}: use 1-128 letters, "
                         "digits, ':', '_' or '-' (AWS IoT thing names)")
    if local_ca and len(name) > CN_MAX:
        raise InputError(f"thing name {shown(name, length=False)} has {len(name)} characters, "
                         "but a local-CA certificate carries it as its CN, which X.509 limits to "
                         f"{CN_MAX}: use a shorter name (or your own --cert/--key/--root-ca)")
    return name


def template_name(name):
    """An AWS provisioning template name: 1..36 of A-Z a-z 0-9 _ - (the device's rule,
    firmware/upcert/config.py)."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,36}", name):
        raise InputError(f"provisioning template name {shown(name, length=False)}: use 1-36 "
                         "letters, digits, '_' or '-'")
    return name


def client_id(value):
    """An MQTT client id as AWS IoT takes it: 1..128 bytes of UTF-8 without '+', '#' or '/'
    (the device's rule, firmware/upcert/config.py)."""
    data = _utf8(value)
    if data is None or not 0 < len(data) <= 128 or any(c in value for c in "+#/"):
        raise InputError(f"client id {shown(value)}: 1..128 bytes of UTF-8 text without '+', "
                         "'#' or '/' (AWS IoT client ids)")
    return value


def board_name(name):
    """An emulated board's name (its folder under $UPCERT_HOME/boards)."""
    if not isinstance(name, str) or not BOARD_RE.fullmatch(name):
        raise InputError(f"board name {shown(name)} is not valid: use 1-64 letters, digits, "
                         "'_' or '-' (it names the folder $UPCERT_HOME/boards/NAME)")
    return name


def board_state_dir(home, name, create=False):
    """$UPCERT_HOME/boards/<name> after checking the name; refused when it resolves outside
    $UPCERT_HOME/boards (a symbolic link). create: make (or tighten) both folders to 0700."""
    board_name(name)
    boards = Path(home) / "boards"
    state = boards / name
    if create:
        private_dir(boards, tighten=True)
    root, resolved = boards.resolve(), state.resolve()
    if resolved.parent != root:
        raise InputError(f"board folder {state} leads to {resolved}, outside {root}: remove "
                         "that link, or give the folder with --state")
    if create:
        private_dir(state, tighten=True)
    return state


# ---- endpoint -----------------------------------------------------------------------------
def _endpoint_shape(text, what):
    """The checks a host name and an endpoint share: not empty, no white space around it, no
    scheme (http://...), no bracketed IPv6 literal."""
    if not isinstance(text, str) or not text:
        raise InputError(f"{what} is empty: give the broker's host name, e.g. "
                         "xxxxxxxx-ats.iot.eu-west-1.amazonaws.com or localhost")
    if text != text.strip():
        raise InputError(f"{what} {shown(text)} starts or ends with white space: remove it")
    if "://" in text:
        raise InputError(f"{what} {shown(text)}: give the host name only, without "
                         f"{shown(text.split('://', 1)[0] + '://')} (the board speaks MQTT over "
                         "TLS, port 8883 unless HOST:PORT says otherwise)")
    if text.startswith("[") or text.count(":") > 2:
        raise InputError(f"{what} {shown(text)}: IPv6 address literals are not supported (the "
                         "board's config takes a host name or an IPv4 address): give a DNS "
                         "name that resolves to it")


def host(text, what="endpoint"):
    """A bare host name (or IPv4 address) the board connects to: the device's config takes no
    scheme, port or path, and its TLS checks the server certificate against this name."""
    _endpoint_shape(text, what)
    if ":" in text:
        raise InputError(f"{what} {shown(text)}: a host name alone, without ':' or a port")
    if len(text) > HOST_MAX:
        raise InputError(f"{what} {shown(text, length=False)} has {len(text)} characters: a "
                         f"host name has at most {HOST_MAX}")
    if "/" in text:
        raise InputError(f"{what} {shown(text)}: give the host name only, without a path")
    for label in text.split("."):
        if not _LABEL_RE.fullmatch(label):
            why = "has an empty part" if not label else f"has the part {shown(label)}"
            raise InputError(f"{what} {shown(text)} {why}: a host name is dot-separated parts "
                             "of 1-63 letters, digits and '-' (not at a part's start or end)")
    return text


def endpoint(text, what="endpoint"):
    """'HOST[:PORT]' -> (host, port): a host name or IPv4 address, and a port 1..65535 in ASCII
    digits (default 8883, AWS IoT's MQTT over TLS)."""
    _endpoint_shape(text, what)
    if text.count(":") > 1:
        raise InputError(f"{what} {shown(text)} has more than one ':': give HOST or HOST:PORT "
                         "(IPv6 address literals are not supported)")
    name, sep, digits = text.partition(":")
    if sep and not name:
        raise InputError(f"{what} {shown(text)} has no host name before ':': give HOST or "
                         "HOST:PORT")
    host(name, what if not sep else f"{what} {shown(text)}: host")
    return name, port(digits, f"{what} {shown(text)}: port") if sep else 8883


def port(value, what="port"):
    """A TCP port 1..65535 (int, or a string of ASCII digits)."""
    return whole_number(value, what, *PORT, "")


# ---- numbers ------------------------------------------------------------------------------
def whole_number(value, what, lo, hi, unit):
    """An int lo..hi from an int or a string of ASCII digits (int() alone takes any Unicode
    digit, and argparse's type=int with it)."""
    unit = f" {unit}" if unit else ""
    if isinstance(value, str) and _DIGITS_RE.fullmatch(value):
        if len(value) > 20:  # int() of thousands of digits is slow, then refused
            raise InputError(f"{what} {shown(value)} is out of range: give {lo}..{hi}{unit}")
        n = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        raise InputError(f"{what} {shown(value)} is not a whole number in the digits 0-9: "
                         f"give {lo}..{hi}{unit}")
    if not lo <= n <= hi:
        raise InputError(f"{what} {n} is out of range: give {lo}..{hi}{unit}")
    return n


_DECIMAL_RE = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?")  # ASCII: float() takes more


def number(value, what, lo, hi):
    """A float lo..hi from an int, a float or ASCII decimal text such as "2" or "0.5"."""
    if isinstance(value, str) and _DECIMAL_RE.fullmatch(value):
        x = float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        x = float(value)
    else:
        raise InputError(f"{what} {shown(value)} is not a number in the digits 0-9 (and one "
                         f"'.'): give {lo:g}..{hi:g}")
    if not lo <= x <= hi:
        raise InputError(f"{what} {x:g} is out of range: give {lo:g}..{hi:g}")
    return x


def telemetry_interval(value, what="--telemetry-interval"):
    """Seconds between telemetry messages, as the device accepts them; None stays None."""
    lo, hi = device_ints()["telemetry_interval_s"]
    return None if value is None else whole_number(value, what, lo, hi, "seconds")


def days(value, what="--days"):
    """Validity in days of a certificate the local CA issues."""
    return whole_number(value, what, *DAYS, "days (at most 10 years, the local CA's own "
                        "lifetime)")


# ---- Wi-Fi --------------------------------------------------------------------------------
def _utf8(text):
    """text as UTF-8 bytes, or None (not a str, or lone surrogates from undecodable bytes)."""
    try:
        return text.encode() if isinstance(text, str) else None
    except UnicodeEncodeError:
        return None


def wifi(ssid, password):
    """(ssid, password) the board joins; the password is never shown in a message."""
    data = _utf8(ssid)
    if data is None or not 0 < len(data) <= SSID_MAX or "\x00" in ssid:
        raise InputError(f"Wi-Fi SSID {shown(ssid)}: 1..{SSID_MAX} bytes of UTF-8 text")
    data = _utf8(password if password is not None else "")
    if data is None or len(data) > PASSWORD_MAX:
        raise InputError(f"the Wi-Fi password (UPCERT_WIFI_PASSWORD) must be UTF-8 text of at "
                         f"most {PASSWORD_MAX} bytes (WPA2)")
    return ssid, password or ""


# ---- a whole config.json ------------------------------------------------------------------
def check_config(cfg):
    """Check a device config (provision.make_config's dict) on the host with the device's own
    limits for what the host sets, so the board never gets a config it refuses after the
    write. Raises InputError."""
    if not isinstance(cfg, dict):
        raise InputError(f"the device config must be a dict, not {type(cfg).__name__}")
    for key in ("thing", "endpoint", "port"):
        if key not in cfg:
            raise InputError(f"the device config has no {key!r}: build it with make_config")
    thing_name(cfg["thing"])
    client_id(cfg.get("client_id", cfg["thing"]))
    host(cfg["endpoint"])
    for key, (lo, hi) in device_ints().items():
        if key in cfg:
            if isinstance(cfg[key], str):  # JSON keeps it a string; the device wants a number
                raise InputError(f"config {key!r} {shown(cfg[key])} is text: give a number "
                                 f"{lo}..{hi}")
            whole_number(cfg[key], f"config {key!r}", lo, hi, "seconds" * key.endswith("_s"))
    store = cfg.get("store", {"kind": "fs"})
    if not isinstance(store, dict) or store.get("kind") not in STORE_KINDS:
        raise InputError(f"config 'store' {shown(store)}: an object whose 'kind' is one of "
                         f"{', '.join(STORE_KINDS)}")
    if cfg.get("wifi") is not None:
        w = cfg["wifi"]
        if not isinstance(w, dict):
            raise InputError("config 'wifi' must be an object with 'ssid' and 'password'")
        wifi(w.get("ssid"), w.get("password", ""))
    return cfg


@functools.cache
def device_ints():
    """{field: (min, max)} of the device config's whole-number fields: the _INTS table of
    firmware/upcert/config.py (the device's own rule), else the copy in this module."""
    try:
        tree = ast.parse(DEVICE_CONFIG.read_text())
        node = next(n.value for n in tree.body if isinstance(n, ast.Assign)
                    and [getattr(t, "id", None) for t in n.targets] == ["_INTS"])
        table = {k: (lo, hi) for k, _, lo, hi in ast.literal_eval(node)}
    except (OSError, SyntaxError, StopIteration, ValueError, TypeError):
        return dict(_INTS)
    return dict(_INTS, **table)


# ---- owner-only state ---------------------------------------------------------------------
def private_dir(path, tighten=False):
    """Make `path` and any missing parents 0700. An existing folder keeps its mode unless
    tighten (for upcert's own folders, e.g. $UPCERT_HOME/boards/<name>)."""
    path = Path(path)
    missing, p = [], path
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by someone else: not ours to change
        except OSError as e:
            raise UpcertError(f"cannot create folder {d}: {e.strerror}") from None
        os.chmod(d, PRIVATE_DIR)  # mkdir's mode passes through the umask
    if not path.is_dir():
        raise UpcertError(f"{path} is not a folder: remove it or choose another place")
    if tighten and not missing:
        _chmod(path, PRIVATE_DIR)
    return path


def private_file(path, *names):
    """Set `path` (or each of `names` inside the folder `path`) to 0600 where it exists."""
    for p in [Path(path) / n for n in names] if names else [Path(path)]:
        if p.is_file() and not p.is_symlink():
            _chmod(p, PRIVATE_FILE)


def _chmod(path, mode):
    try:
        if os.stat(path).st_mode & 0o7777 != mode:
            os.chmod(path, mode)
    except (PermissionError, FileNotFoundError):
        pass  # someone else's file (the owner decides), or gone meanwhile


def open_private(path, mode="wb"):
    """open() for a file that is 0600 from its creation on (also when it existed before)."""
    flags = {"wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             "r+b": os.O_RDWR | os.O_CREAT}[mode]
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def write_private(path, data):
    """Write bytes or text to a 0600 file."""
    with open_private(path, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)
