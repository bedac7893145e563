# What a reboot left of a rotation, read once at start-up (Rotation.start) and then dropped.
# A pair staged before the reboot is discarded, key erased, its certificate reported for
# retirement: its checks and its job were in RAM. An identity committed but not yet proven is
# watched again: the broker refusing it rolls the store back (the store's journal says so).
from binascii import hexlify
from hashlib import sha256


def found(store, say):
    """([(certificate id, "reboot")] to report for retirement, id of the identity to watch or
    None), after discarding a staged pair (logged through say). A store that cannot tell is
    logged and taken as clean: the next stage() overwrites what it holds anyway."""
    gone = []
    old = None
    m = "staged pair from before the reboot discarded"
    try:
        prev = store.staged()  # (not describe(): a secure element's talks to the chip)
        if prev:
            # RegisterThing may have activated its certificate before the reboot: reported for
            # retirement at the first service(), as a failed rotation's is.
            gone.append((hexlify(sha256(prev[0]).digest()).decode(), "reboot"))
            store.discard()
            say(m)
        prev = store.trial()
        if prev:
            old = hexlify(sha256(prev).digest()).decode()  # its certificateId
            say("identity committed before the reboot not proven yet: rollback to %s if the"
                " broker refuses it" % old[:16])
    except Exception as e:  # StoreError, OSError
        from upcert import diagnose  # loaded on a failure only

        say("%s: failed: %s" % (m, diagnose.explain(e)))
    return gone, old
