# upcert device package: a rotating X.509 identity for MicroPython boards on AWS IoT Core.
# Modules are imported on demand (one job each); nothing happens at import time.


def drop(*names):
    """Forget modules of the device package until they are imported again: the RAM of their
    .mpy code is freed at once (not their interned strings; frozen modules cost only their
    dict). Callers must hold no reference to them. Here, not in a module of its own: the
    package is always loaded."""
    import gc
    import sys

    g = globals()
    for n in names:
        sys.modules.pop("upcert." + n, None)
        g.pop(n, None)
    gc.collect()


def backoff(prev_s, first_s, max_s):
    """One exponential backoff for start-up, reconnects and rotation: (d, ms), where d doubles
    prev_s up to max_s (prev_s 0: first_s) and ms is d seconds plus up to 25 % random jitter, so
    that a fleet restarted by one power cut or broker outage does not retry in step."""
    from random import getrandbits

    d = min(prev_s * 2, max_s) if prev_s else first_s
    return d, d * 1000 + getrandbits(30) % (d * 250 + 1)
