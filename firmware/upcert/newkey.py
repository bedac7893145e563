# Steps 1-2 of a rotation (scheduled by rotation.py, in RAM only meanwhile): the trust anchors,
# a new P-256 key (made in the secure element when the store has one), the CSR.
from upcert import drop


def make(rot, why):
    """(None, [CSR PEM, new key DER or the chip's key reference, public point, trust anchors])
    or (step, exception) for rot (upcert.rotation.Rotation, read only); why: what asked for the
    rotation (logged)."""
    step = "key"
    try:
        rot.say("start (%s; %d bytes of RAM)" % (why, rot.room()))  # (it needs RAM too)
        # The trust anchors first, while the heap is whole: the check and the trial need each
        # in one piece, and after the key and the CSR the free RAM is in small holes.
        roots = rot.roots() if rot.roots else ()
        drop("certlean")  # load_roots's reader (5 KB of 32-bit heap): out before p256 and csr
        from upcert import csr

        new_key = getattr(rot.store, "new_key", None)
        if new_key:  # a secure element: the key made in a spare slot, never leaves it
            key, ref = new_key()
        else:
            from upcert import p256

            key = p256.generate()
            ref = None
        rot.say("new P-256 key")  # in the chip for the atecc608 store (its describe())
        step = "csr"
        t = rot.config["thing"]
        pem = csr.pem(csr.build(key, [("CN", t)] + list(rot.config["fleet"]["subject"])))
        rot.say("CSR for CN=%s (%d bytes)" % (t, len(pem)))
        # rotate.run() frees items as it goes; the chip's key is staged by its reference
        return None, [pem, ref or key.private_der(), key.public_point(), roots]
    except Exception as e:
        return step, e
    finally:
        key = csr = p256 = new_key = roots = None  # (stale frame slots are scanned too)
