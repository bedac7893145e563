# Device tests for upcert.config: defaults from docs/ARCHITECTURE.md and one clear ConfigError
# (naming the file and the field) per bad input.
import json

from checks import eq, raises, tmpdir
from upcert import config
from upcert.errors import ConfigError

_MIN = {"thing": "dev1", "endpoint": "localhost"}


def _write(name, text):
    path = tmpdir(name) + "/config.json"
    with open(path, "w") as f:
        f.write(text)
    return path


def test_defaults():
    cfg = config.load(_write("defaults", json.dumps(_MIN)))
    eq(cfg["client_id"], "dev1", "client_id")
    eq(cfg["port"], 8883, "port")
    eq(cfg["store"], {"kind": "fs"}, "store")
    eq(
        cfg["topics"],
        {
            "telemetry": "things/dev1/telemetry",
            "commands": "things/dev1/commands",
            "replies": "things/dev1/replies",
        },
        "topics",
    )
    eq(cfg["telemetry_interval_s"], 60, "telemetry_interval_s")
    eq(cfg["keepalive_s"], 60, "keepalive_s")
    eq("wifi" in cfg, False, "no wifi by default")


def test_given_values_kept():
    full = {
        "thing": "dev2",
        "client_id": "dev2-trial",
        "endpoint": "abc-ats.iot.eu-west-1.amazonaws.com",
        "port": 443,
        "store": {"kind": "nvs"},
        "topics": {"telemetry": "t/dev2/up"},
        "telemetry_interval_s": 5,
        "keepalive_s": 1200,
        "wifi": {"ssid": "lab", "password": "pw"},
        "extra": 1,
    }
    cfg = config.validate(full)
    for key in full:
        if key != "topics":
            eq(cfg[key], full[key], key)
    eq(cfg["topics"]["telemetry"], "t/dev2/up", "custom topic")
    eq(cfg["topics"]["replies"], "things/dev2/replies", "topic default filled")
    eq("client_id" in _MIN, False, "input dict not modified")


def test_dumps_round_trip():
    cfg = config.validate(_MIN)
    eq(config.validate(json.loads(config.dumps(cfg))), cfg, "round trip")


def test_file_errors():
    raises(
        ConfigError,
        config.load,
        "/nonexistent/upcert.d/config.json",
        contains=("config /nonexistent/upcert.d/config.json: cannot read", "upcert provision"),
    )
    path = _write("badjson", '{"thing": ')
    raises(ConfigError, config.load, path, contains=("config " + path, "not valid JSON"))
    path = _write("array", "[1, 2]")
    raises(ConfigError, config.load, path, contains="must be a JSON object")


def test_missing_required():
    path = _write("noendpoint", json.dumps({"thing": "dev1"}))
    raises(ConfigError, config.load, path, contains="config %s: 'endpoint' missing" % path)
    raises(
        ConfigError,
        config.validate,
        {"endpoint": "x"},
        contains="config /upcert.d/config.json: 'thing' missing",
    )


def _bad(field, value, contains):
    cfg = dict(_MIN)
    cfg[field] = value
    raises(ConfigError, config.validate, cfg, contains=contains)


def test_bad_names():
    for field in ("thing", "client_id"):
        _bad(field, "", "'%s' must be a string of 1..128 bytes" % field)
        _bad(field, "x" * 129, "1..128 bytes")
        _bad(field, "\u00e9" * 65, "1..128 bytes")  # 130 bytes in UTF-8
        _bad(field, 7, "1..128 bytes")
        for c in "+#/":
            _bad(field, "dev" + c + "1", "must not contain '%s'" % c)
    eq(config.validate(dict(_MIN, thing="x" * 128))["client_id"], "x" * 128, "128 bytes ok")


def test_bad_numbers():
    _bad("keepalive_s", 29, "'keepalive_s' must be an integer 30..1200, got 29")
    _bad("keepalive_s", 1201, "30..1200")
    _bad("keepalive_s", "60", "30..1200")
    _bad("keepalive_s", True, "30..1200")
    _bad("port", 0, "'port' must be an integer 1..65535")
    _bad("port", 65536, "1..65535")
    _bad("port", 8883.0, "1..65535")
    _bad("telemetry_interval_s", 0, "'telemetry_interval_s'")
    eq(config.validate(dict(_MIN, keepalive_s=30))["keepalive_s"], 30, "30 ok")


def test_bad_endpoint_store_topics_wifi():
    _bad("endpoint", "mqtts://host", "'endpoint' must be a bare host name")
    _bad("endpoint", "host:8883", "bare host name")
    _bad("endpoint", "", "bare host name")
    _bad("store", "fs", "'store' must be an object with a 'kind' string")
    _bad("store", {}, "'kind'")
    _bad("topics", [], "'topics' must be an object")
    _bad("topics", {"telemetry": "a/b/c/d/e/f/g/h/i"}, "at most 7 '/'")
    _bad("topics", {"replies": "x" * 257}, "topic 'replies' must be 1..256 bytes")
    _bad("topics", {"commands": "things/+/commands"}, "no '+' or '#'")
    _bad("wifi", {"password": "x"}, "'wifi' must be an object with 'ssid' (1..32 bytes)")
    _bad("wifi", {"ssid": "lab", "password": 5}, "a string 'password'")
    _bad("wifi", {"ssid": "x" * 33}, "1..32 bytes")

