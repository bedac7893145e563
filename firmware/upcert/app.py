# Start-up: config, network, credentials, trust anchors, TLS context, clock, then the agent (with
# certificate rotation when the store has A/B slots).
# Problems a person must fix end in one "upcert: cannot start: ..." line and a return to the REPL.
import gc
import time

from micropython import const

from upcert import drop, tlsconn
from upcert.errors import ClockNotSetError, ConnectError, UpcertError

_SPARE = const(3584)  # kept for a rotation's TLS context: 3 KB (unix port) + its header
# Free RAM at start-up below which rotation is off. Measured (bench/bench_rotation_heap.py, 64-bit
# unix port, modules as .mpy): a rotation completes with about 44 KB free here and runs out of
# memory at the CSR below that (keygen and CSR load p256, csr and derw, ~12 KB of code, into a
# heap that the agent's connection has fragmented); 48 KB keeps a margin. An ESP32 (32-bit
# objects) needs roughly 60 %.
_ROOM = const(49152)


def _retry(what, fn, log, sleep_ms):
    # Transient start-up steps (Wi-Fi, NTP): exponential backoff 1 s .. 300 s until fn() works.
    d = 1
    while True:
        try:
            if fn() is not False:
                return
            why = "not done yet"
        except (ClockNotSetError, ConnectError, OSError) as e:
            why = str(e) if isinstance(e, UpcertError) else "OSError %s" % e
        if not why.startswith(what):
            why = what + ": " + why
        log("upcert: %s; retry in %d s" % (why, d))
        sleep_ms(d * 1000)
        d = min(d * 2, 300)


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
    """Run the device (board: NAME, network_up(config), clock(), store(config)); returns only
    when a person must fix something, after one "upcert: cannot start: ..." line.
    KeyboardInterrupt (Ctrl-C from mpremote) propagates."""
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
        drop("x509", "der")  # the agent reads its certificate once per connection, then drops them
        ctx = tlsconn.make_context(store.certificate(), store.private_key(), roots)
        del roots
        clock = board.clock()
        _retry("clock not set", lambda: _sync(clock), log, sleep_ms)
    except UpcertError as e:  # ConfigError, StoreError, CertificateError, ConnectError
        log("upcert: cannot start: %s" % e)
        return
    from upcert.agent import (
        Agent,  # after the TLS context: its 3 KB block needs an unfragmented heap
    )

    rot = _rotation(config, store, clock, store_mod, roots_path, log)
    Agent(config, store, clock, tlsconn.Connector(ctx).connect, log, rot).run()


def _rotation(config, store, clock, store_mod, roots_path, log):
    # A Rotation when the store has A/B slots (the base Store refuses to stage: a read-only
    # identity) and the RAM left can hold a rotation; False when it cannot (the agent first:
    # telemetry says "rotation": "off"); None for a store without slots.
    ro = getattr(getattr(store_mod, "Store", None), "stage", None)
    if getattr(type(store), "stage", ro) is ro:
        return None
    gc.collect()
    if gc.mem_free() < _ROOM:
        return False
    spare = []

    def connector(cert, key, roots=None):  # a fresh context for a new pair (trial, then for good)
        roots = roots or store_mod.load_roots(roots_path)
        # The context needs one 3 KB block; mid-rotation the heap is fragmented, so it takes
        # the block kept free since start-up (found again after a collection).
        spare.clear()
        gc.collect()
        try:
            return tlsconn.Connector(tlsconn.make_context(cert, key, roots)).connect
        finally:
            try:
                spare.append(bytearray(_SPARE))
            except MemoryError:
                pass  # the next rotation goes without

    try:
        from upcert.rotation import Rotation

        rot = Rotation(
            config, store, clock, connector, log, lambda: store_mod.load_roots(roots_path)
        )
        spare.append(bytearray(_SPARE))
        rot.start()
    except MemoryError:
        return False
    return rot
