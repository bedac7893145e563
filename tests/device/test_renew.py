# Device tests for upcert.renew.decide (days rule, fraction rule, jitter bounds, untrusted clock,
# expired, short-lived certificates) and the config keys "renew" and "fleet" (upcert.config).
from certdata import EC_DER
from checks import eq, raises, true
from upcert import config, renew
from upcert.errors import ConfigError
from upcert.x509 import Certificate

DAY = 86400
T0 = 1800000000


class _Cert:
    def __init__(self, days, start=T0):
        self.not_before = start
        self.not_after = start + days * DAY


def _due(cert, policy, rand=0.0):
    return renew.decide(cert, cert.not_before, policy, True, rand)[2]


def test_days_rule():
    c = _Cert(365)
    p = {"days": 30, "fraction": 0.01, "jitter_s": 0}  # 3.65 days: the days rule comes first
    eq(_due(c, p), c.not_after - 30 * DAY, "due 30 days before expiry")
    r, why, due = renew.decide(c, c.not_after - 30 * DAY - 1, p, True, 0.0)
    eq(r, False, "one second before the window")
    true(why.startswith("expires in 30 days, renewal due in 1 s"), why)
    r, why, _ = renew.decide(c, c.not_after - 29 * DAY, p, True, 0.0)
    eq((r, why), (True, "expires in 29 days (renewal window 30 days)"), "inside the window")


def test_fraction_rule():
    c = _Cert(365)
    p = {"days": 30, "fraction": 0.2, "jitter_s": 0}  # 73 days: the fraction rule comes first
    eq(_due(c, p), c.not_after - 73 * DAY, "due at 80 % of the lifetime")
    eq(renew.decide(c, c.not_after - 74 * DAY, p, True, 0.0)[0], False, "before")
    eq(renew.decide(c, c.not_after - 72 * DAY, p, True, 0.0)[0], True, "after")


def test_defaults_when_policy_missing():
    c = _Cert(365)
    eq(_due(c, None), c.not_after - 73 * DAY, "fraction 0.2 beats 30 days, no jitter at rand 0")
    eq(_due(c, {}), c.not_after - 73 * DAY, "empty policy")
    eq(renew.DEFAULTS, {"days": 30, "fraction": 0.2, "jitter_s": 3600}, "defaults")


def test_jitter_bounds():
    c = _Cert(365)
    p = {"days": 30, "fraction": 0, "jitter_s": 3600}
    base = c.not_after - 30 * DAY
    eq(_due(c, p, 0.0), base, "rand 0: no jitter")
    eq(_due(c, p, 0.5), base - 1800, "half")
    top = _due(c, p, 0.99999)
    true(base - 3600 < top <= base - 3599, "rand near 1: almost the whole hour, %d" % (base - top))
    seen = set(_due(c, p, i / 16) for i in range(16))
    eq(len(seen), 16, "different devices get different times")


def test_short_certificate_renews_once_per_tenth_of_its_life():
    # A 10-minute demo certificate with the 30-day default would be due from birth, and each
    # new one again: due after a tenth of its life instead, whatever the jitter.
    c = _Cert(0)
    c.not_after = c.not_before + 600
    for rand in (0.0, 0.5, 0.99):
        eq(_due(c, renew.DEFAULTS, rand), c.not_before + 60, "due a tenth in, rand %s" % rand)
    eq(renew.decide(c, c.not_before + 10, None, True, 0.99)[0], False, "fresh: not due")
    r, why, _ = renew.decide(c, c.not_before + 61, None, True, 0.0)
    eq((r, why), (True, "expires in 539 s (renewal window 540 s)"), "after a tenth")
    # Fraction rule on a short certificate: jitter at most a quarter of the lifetime.
    c.not_after = c.not_before + 1000
    p = {"days": 0, "fraction": 0.2, "jitter_s": 3600}
    eq(_due(c, p, 0.0), c.not_after - 200, "fraction")
    eq(_due(c, p, 0.5), c.not_after - 200 - 125, "jitter clamped to 250 s")


def test_untrusted_clock_never_renews():
    c = _Cert(365)
    for now in (c.not_before, c.not_after - DAY, c.not_after + DAY, 5):
        eq(renew.decide(c, now, None, False, 0.3), (False, "clock untrusted", None), "untrusted")


def test_expired_renews():
    c = _Cert(365)
    r, why, due = renew.decide(c, c.not_after + 3 * DAY, None, True, 0.0)
    eq((r, why, due), (True, "expired 3 days ago", c.not_after - 73 * DAY), "expired")


def test_real_certificate():
    cert = Certificate(EC_DER)  # 2026-01-01 .. 2049-12-31: fraction rule, ~4.8 years ahead
    r, why, due = renew.decide(cert, T0, {"days": 30, "fraction": 0.2, "jitter_s": 0}, True, 0.0)
    life = cert.not_after - cert.not_before
    eq((r, due), (False, cert.not_after - int(life * 0.2)), "not due in 2027")
    true(why.startswith("expires in 8386 days, renewal due in "), why)


def _cfg(**over):
    c = {"thing": "dev1", "endpoint": "localhost"}
    c.update(over)
    return c


def test_config_defaults():
    c = config.validate(_cfg())
    eq(c["renew"], {"days": 30, "fraction": 0.2, "jitter_s": 3600}, "renew defaults")
    eq(
        c["fleet"],
        {"template": "upcert-rotation", "subject": [], "parameters": {}, "timeout_s": 30},
        "fleet defaults",
    )
    c = config.validate(
        _cfg(
            renew={"days": 0, "fraction": 0.5},
            fleet={"template": None, "subject": [["O", "Acme"]], "parameters": {"Site": "b1"}},
        )
    )
    eq(c["renew"], {"days": 0, "fraction": 0.5, "jitter_s": 3600}, "merged")
    eq((c["fleet"]["template"], c["fleet"]["subject"]), (None, [["O", "Acme"]]), "fleet")


def test_config_refusals():
    for over, text in (
        ({"renew": 30}, "'renew' must be an object"),
        ({"renew": {"dayz": 3}}, "'renew.dayz' unknown: use "),
        ({"renew": {"days": -1}}, "'renew.days' must be a number 0..3650, got -1"),
        ({"renew": {"fraction": 1}}, "'renew.fraction' must be a number 0..0.9"),
        ({"renew": {"jitter_s": "1h"}}, "'renew.jitter_s' must be a number"),
        ({"fleet": {"template": "a/b"}}, "'fleet.template' must be null or a template name"),
        ({"fleet": {"template": "x" * 37}}, "'fleet.template'"),
        ({"fleet": {"subject": [["CN", "x"]]}}, "'fleet.subject' must be a list of [attribute"),
        ({"fleet": {"subject": {"O": "x"}}}, "attribute one of O, OU, C, ST, L, serialNumber"),
        ({"fleet": {"parameters": {"a": 1}}}, "'fleet.parameters' must map names to strings"),
        ({"fleet": {"timeout_s": 0}}, "'fleet.timeout_s' must be an integer 1..300, got 0"),
        ({"fleet": {"template": 5, "x": 1}}, "'fleet.x' unknown"),
    ):
        raises(ConfigError, config.validate, _cfg(**over), contains=text)
