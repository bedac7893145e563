# When to renew the device certificate: a pure function of the certificate, the time and the
# policy (config "renew"), after AWS Device Defender's DEVICE_CERTIFICATE_EXPIRING_CHECK. No I/O.
from micropython import const

_DAY = const(86400)
# config "renew" defaults: 30 days is DEVICE_CERTIFICATE_EXPIRING_CHECK's default threshold.
DEFAULTS = {"days": 30, "fraction": 0.2, "jitter_s": 3600}


def _span(s):
    # Seconds as a short figure: days for the long views, seconds for demo certificates.
    return "%d days" % (s // _DAY) if s >= 2 * _DAY else "%d s" % s


def decide(cert, now, policy, trusted, rand):
    """(renew, reason, due_at) for cert (`not_before`, `not_after`, seconds) at now (seconds,
    same epoch).

    policy: dict with optional days, fraction, jitter_s (DEFAULTS). The renewal window opens
    when the time left falls under `days` or under `fraction` of the lifetime, whichever comes
    first, earlier by rand (0 <= rand < 1, fixed per device) times jitter_s (at most a quarter
    of the lifetime) so that a fleet does not renew in the same minute; but never before a
    tenth of the lifetime has passed, so that a certificate shorter than `days` (a demo's) is
    renewed once per tenth of its life, not in a loop. An untrusted clock never renews
    (due_at None): its reading means nothing.
    """
    if not trusted:
        return False, "clock untrusted", None
    p = policy or DEFAULTS
    na = cert.not_after
    life = na - cert.not_before
    lead = max(p.get("days", 30) * _DAY, int(life * p.get("fraction", 0.2)))
    jitter = int(rand * min(p.get("jitter_s", 3600), life // 4))
    due = max(na - lead - jitter, cert.not_before + life // 10)
    left = na - now
    if left < 0:
        return True, "expired %s ago" % _span(-left), due
    if now >= due:
        return True, "expires in %s (renewal window %s)" % (_span(left), _span(na - due)), due
    return False, "expires in %s, renewal due in %s" % (_span(left), _span(due - now)), due
