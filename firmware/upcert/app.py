# Start-up: config, network, credentials, trust anchors, TLS context, clock, then the agent.
# Problems a person must fix end in one "upcert: cannot start: ..." line and a return to the REPL.
import time

from upcert import tlsconn
from upcert.errors import ClockNotSetError, ConnectError, UpcertError


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
    try:
        config = config_mod.load(config_path)
        _retry("network down", lambda: board.network_up(config), log, sleep_ms)
        store = board.store(config)
        roots = store_mod.load_roots(folder + "/roots.der")
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

    Agent(config, store, clock, tlsconn.Connector(ctx).connect, log).run()
