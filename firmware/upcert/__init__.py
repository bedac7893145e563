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
