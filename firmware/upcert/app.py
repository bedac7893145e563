# Start-up: config, network, credentials, trust anchors, TLS context, clock, then the agent (with
# certificate rotation when the store has A/B slots).
# Problems a person must fix end in one "upcert: cannot start: ..." line and a return to the REPL.
# There is no memory threshold for rotation: free RAM at start-up says little on an ESP32, whose
# heap grows on demand, so each rotation step survives MemoryError instead (rotation.py).
import gc
import time

from micropython import const

from upcert import backoff, drop, tlsconn
from upcert.errors import ClockNotSetError, ConnectError, UpcertError

_HEADROOM = const(64)  # a rotation's spare block: one TLS context object and this much more


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


def main(board, config_path="/upcert.d/config.json", log=print, sleep_ms=time.sleep_ms):
    """Run the device (board: NAME, network_up(config, timeout_ms), clock(), store(config), and
    optionally heap_room() -> bytes of RAM the device can count on, see boards/esp32_generic/board.py);
    returns only when a person must fix something, after one "upcert: cannot start: ..." line.
    KeyboardInterrupt (Ctrl-C from mpremote) propagates."""
    # Start-up in a frame of its own: this one, which lives as long as the agent, then holds
    # nothing of it (MicroPython's GC also scans a frame's stale stack slots). Else the first
    # TLS context would stay in RAM after a rotation replaced it.
    agent = _start(board, config_path, log, sleep_ms)
    if agent:
        agent.run()


def _start(board, config_path, log, sleep_ms):
    # The Agent, or None after a "cannot start" line.
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
            _retry("claim", lambda: _claim(config, store, clock, roots, log), log, sleep_ms)
        connect = _connector(config, store, clock)(store.certificate(), store.private_key(), roots)
        del roots
        _retry("clock not set", lambda: _sync(clock), log, sleep_ms)
    except UpcertError as e:  # ConfigError, StoreError, CertificateError, ConnectError
        log("upcert: cannot start: %s" % e)
        return None
    from upcert.agent import (
        Agent,  # after the TLS context: its block (about 2-3 KB) needs an unfragmented heap
    )

    room = getattr(board, "heap_room", gc.mem_free)
    rot = _rotation(config, store, clock, store_mod, roots_path, log, room)
    return Agent(config, store, clock, connect, log, rot, room,
                 lambda: board.network_up(config, 0))


def _claim(config, store, clock, roots, log):
    from upcert import claim

    try:
        claim.run(config, store, clock, _connector(config, store, clock), roots, log)
    finally:
        claim = None
        drop("claim")


def _connector(config, store, clock):
    # make(cert, key, roots) -> connect(host, port): the port's tls module (a fresh context per
    # identity), or upcert's own TLS client (tls12.connector) when the key is in a secure
    # element (the atecc608 store; key None or a key reference), the store holds no key bytes,
    # ALPN is configured (port 443), or config "tls" is "upcert". The choice's own code and
    # strings load only with tls12: the heap here is counted in interned names.
    chip = store.kind == "atecc608"

    def make(cert, key, roots):
        t = config["tls"]
        if t == "builtin" or not (chip or key is None or t == "upcert" or config["alpn"]):
            return tlsconn.Connector(tlsconn.make_context(cert, None if chip else key,
                                                          roots)).connect
        from upcert.tls12 import connector

        return connector(config, store, clock, cert, key, roots, chip)

    return make


def _rotation(config, store, clock, store_mod, roots_path, log, room):
    # A Rotation when the store has A/B slots (the base Store refuses to stage: a read-only
    # identity); False when even its code could not be loaded (telemetry says "rotation":
    # "off"); None for a store without slots.
    ro = getattr(getattr(store_mod, "Store", None), "stage", None)
    if getattr(type(store), "stage", ro) is ro:
        return None
    spare_n = tlsconn.context_bytes() + _HEADROOM
    gc.collect()
    spare = []
    make = _connector(config, store, clock)

    def connector(cert, key, roots=None):  # a fresh context for a new pair (trial, then for good)
        roots = roots or store_mod.load_roots(roots_path)
        # The context object needs one block (tlsconn.context_bytes); mid-rotation the heap is
        # fragmented, so it takes the block kept free since start-up (found again after a
        # collection).
        spare.clear()
        gc.collect()
        try:
            return make(cert, key, roots)
        finally:
            try:
                spare.append(bytearray(spare_n))
            except MemoryError:
                pass  # the next rotation goes without

    try:
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
        rot = Rotation(
            config, store, clock, connector, log, lambda: store_mod.load_roots(roots_path), room
        )
        spare.append(bytearray(spare_n))
        rot.start()
    except MemoryError:
        log("upcert: rotation: off: out of memory loading it (%d bytes free)" % room())
        return False
    return rot
