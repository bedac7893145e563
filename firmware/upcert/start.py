# Start-up, run once by app.main and then dropped from RAM: config, network, credentials, trust
# anchors, TLS context, clock, provisioning by claim, the rotation's set-up; then the Agent.
# Problems a person must fix end in one "upcert: cannot start: ..." line and None.
# Functions that outlive start-up (the connectors, the link probe) are closures made by app.py,
# passed in as `app` (not imported: app imports this module): one made here would keep this
# module's code in RAM (a closure holds its module's globals).
# There is no memory threshold for rotation: free RAM at start-up says little on an ESP32, whose
# heap grows on demand, so each rotation step survives MemoryError instead (rotation.py).
import gc

from upcert import backoff, drop
from upcert.errors import ClockNotSetError, ConnectError, UpcertError


def _retry(what, fn, log, sleep_ms):
    # Transient start-up steps (Wi-Fi, NTP): backoff 1 s .. 300 s with jitter until fn() works.
    d = 0
    while True:
        try:
            if fn() is not False:
                return
            why = "not done yet"
        except (ClockNotSetError, ConnectError, OSError) as e:
            why = str(e) if isinstance(e, UpcertError) else "OSError %s" % e
        if not why.startswith(what):
            why = what + ": " + why
        d, ms = backoff(d, 1, 300)
        log("upcert: %s; retry in %d s" % (why, d))
        sleep_ms(ms)


def _sync(clock):
    # NTP, then judge: the clock's own message names its reading (e.g. 2000-01-01 on an ESP32).
    try:
        clock.sync()
        ntp = "answered"
    except Exception as e:  # ntptime raises OSError, or worse on a garbled reply
        ntp = "%s %s" % (type(e).__name__, e)
    try:
        clock.require_trusted()
    except ClockNotSetError as e:
        raise ClockNotSetError("%s (NTP: %s)" % (e, ntp)) from None


def agent(board, config_path, log, sleep_ms, app):
    """The Agent for board and its config (app.main documents board), or None after a
    "cannot start" line. app: the upcert.app module (connector, probe, roots,
    rotation_connector)."""
    from upcert import config as config_mod
    from upcert import store as store_mod

    folder = config_path.rsplit("/", 1)[0] if "/" in config_path else "."
    roots_path = folder + "/roots.der"
    try:
        config = config_mod.load(config_path)
        config_mod = None
        drop("config")  # start-up only: its code is several KB of RAM as .mpy
        _retry("network down", lambda: board.network_up(config), log, sleep_ms)
        store = board.store(config)
        roots = store_mod.load_roots(roots_path)
        drop("certlean")  # the agent reads its certificate once per connection, then drops it
        clock = board.clock()
        if "claim" in config:  # provisioning by claim, until the board's identity connected
            _retry("clock not set", lambda: _sync(clock), log, sleep_ms)
            _retry("claim", lambda: _claim(app, config, store, clock, roots, log), log, sleep_ms)
        connect = app.connector(config, store, clock)(store.certificate(), store.private_key(),
                                                      roots)
        del roots
        _retry("clock not set", lambda: _sync(clock), log, sleep_ms)
    except UpcertError as e:  # ConfigError, StoreError, CertificateError, ConnectError
        log("upcert: cannot start: %s" % e)
        return None
    from upcert.agent import (
        Agent,  # after the TLS context: its block (about 2-3 KB) needs an unfragmented heap
    )

    room = getattr(board, "heap_room", gc.mem_free)
    rot = _rotation(app, config, store, clock, store_mod, roots_path, log, room)
    return Agent(config, store, clock, connect, log, rot, room, app.probe(board, config))


def _claim(app, config, store, clock, roots, log):
    from upcert import claim

    try:
        claim.run(config, store, clock, app.connector(config, store, clock), roots, log)
    finally:
        claim = None
        drop("claim")


def _rotation(app, config, store, clock, store_mod, roots_path, log, room):
    # A Rotation when the store has A/B slots (the base Store refuses to stage: a read-only
    # identity); False when even its code could not be loaded (telemetry says "rotation":
    # "off"); None for a store without slots.
    ro = getattr(getattr(store_mod, "Store", None), "stage", None)
    if getattr(type(store), "stage", ro) is ro:
        return None
    try:
        connector, spare = app.rotation_connector(config, store, clock, store_mod, roots_path)
        from upcert.rotation import _WORK, Rotation

        # With the key in a chip (upcert's TLS client: many modules, many names), each module
        # a rotation loads is loaded once now and dropped, so that its names are interned while
        # the heap is whole: MicroPython's pools of interned names double in size (py/qstr.c),
        # and the pool a rotation's modules would open mid-rotation is one large block that
        # the heap, fragmented by then, may not have (emulated chip board: none with 74 KB
        # free). Not for a software key: there it costs the 32-bit cycle 17K (71K -> 88K).
        if store.kind == "atecc608":
            for m in _WORK:
                __import__("upcert." + m)
            drop(*_WORK)
        rot = Rotation(config, store, clock, connector, log, app.roots(store_mod, roots_path), room)
        spare()
        rot.start()
    except MemoryError:
        log("upcert: rotation: off: out of memory loading it (%d bytes free)" % room())
        return False
    return rot
