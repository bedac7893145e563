# The device's entry point (main.py calls main()): start-up (start.py, dropped from RAM once
# the agent runs), then the agent's loop. What outlives start-up is made here: the connectors
# (TLS contexts for an identity) and the link probe. Problems a person must fix end in one
# "upcert: cannot start: ..." line and a return to the REPL.
import gc
import time

from micropython import const

from upcert import drop, tlsconn

_HEADROOM = const(64)  # a rotation's spare block: one TLS context object and this much more


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
    import sys

    from upcert import start

    try:
        return start.agent(board, config_path, log, sleep_ms, sys.modules[__name__])
    finally:
        start = None
        drop("start")


def probe(board, config):
    """The agent's link probe: raises (ConnectError) while the board's network is down."""
    return lambda: board.network_up(config, 0)


def roots(store_mod, path):
    """roots() -> the trust anchors at path (DER list), read when a rotation needs them."""
    return lambda: store_mod.load_roots(path)


def connector(config, store, clock):
    # make(cert, key, roots, room=None) -> connect(host, port): the port's tls module (a fresh
    # context per identity; room() frees the block its context object takes, called just before
    # it is made: the code that makes it, loaded meanwhile, would take that block), or upcert's
    # own TLS client (tls12.connector) when the key is in a secure
    # element (the atecc608 store; key None or a key reference), the store holds no key bytes,
    # ALPN is configured (port 443), or config "tls" is "upcert". The choice's own code and
    # strings load only with tls12: the heap here is counted in interned names.
    chip = store.kind == "atecc608"

    def make(cert, key, roots, room=None):
        t = config["tls"]
        if t == "builtin" or not (chip or key is None or t == "upcert" or config["alpn"]):
            return tlsconn.Connector(tlsconn.make_context(cert, None if chip else key, roots,
                                                          room)).connect
        if room:
            room()
        from upcert.tls12 import connector

        return connector(config, store, clock, cert, key, roots, chip)

    return make


def rotation_connector(config, store, clock, store_mod, roots_path):
    """(connector, spare) for a Rotation: connector(cert, key, roots=None) -> connect(host,
    port), a fresh TLS context for a new pair (the trial, then for good); spare() keeps free,
    from start-up on, the one block such a context object needs (tlsconn.context_bytes):
    mid-rotation the heap is fragmented, and a collection finds that block again."""
    spare_n = tlsconn.context_bytes() + _HEADROOM
    gc.collect()
    spare = []
    make = connector(config, store, clock)

    def keep():
        if spare:  # (room() was not called: the context was refused before it was made)
            return
        try:
            spare.append(bytearray(spare_n))
        except MemoryError:
            pass  # the next rotation goes without

    def room():
        spare.clear()
        gc.collect()

    def connect(cert, key, roots=None):
        roots = roots or store_mod.load_roots(roots_path)
        try:
            return make(cert, key, roots, room)
        finally:
            keep()

    return connect, keep
