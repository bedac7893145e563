# Steps 1-2 of a rotation (scheduled by rotation.py, in RAM only meanwhile): the trust anchors,
# a new P-256 key (made in the secure element when the store has one), the CSR. The P-256 code
# and the CSR writer are in RAM one at a time (32-bit: ~6 and ~4 KB as loaded): the key is made
# and its public point computed, the request written, its digest signed, the request finished,
# each in a function of its own whose frame is gone before the next module loads (MicroPython's
# GC scans a live frame's stale slots: a Key held there would keep p256's code).
from hashlib import sha256

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
        new_key = getattr(rot.store, "new_key", None)
        if new_key:  # a secure element: the key made in a spare slot, never leaves it
            chip, ref = new_key()
            point = chip.public_point()
        else:
            chip = None
            d, point, ref = _key()
            drop("p256", "derw")
        rot.say("new P-256 key")  # in the chip for the atecc608 store (its describe())
        step = "csr"
        t = rot.config["thing"]
        info = _info(point, [("CN", t)] + list(rot.config["fleet"]["subject"]))
        drop("csr", "derw")
        digest = sha256(info).digest()
        r, s = chip.sign_digest(digest) if chip else _sign(d, digest)
        drop("p256", "derw")
        pem = _pem(info, r, s)
        rot.say("CSR for CN=%s (%d bytes)" % (t, len(pem)))
        # rotate.run() frees items as it goes; the chip's key is staged by its reference
        return None, [pem, ref, point, roots]
    except Exception as e:
        return step, e
    finally:
        chip = d = new_key = roots = info = None  # (stale frame slots are scanned too)


def _key():
    # (scalar, public point, PKCS#8 DER) of a new software key: only the scalar outlives
    # p256 in RAM (Key(d) signs with it later).
    from upcert import p256

    k = p256.generate()
    return k._d, k.public_point(), k.private_der()


def _info(point, subject):
    from upcert import csr

    return csr.request_info(point, subject)


def _sign(d, digest):
    from upcert import p256

    return p256.Key(d).sign_digest(digest)


def _pem(info, r, s):
    from upcert import csr

    try:
        return csr.pem(csr.signed(info, r, s))
    finally:
        csr = None
        drop("csr", "derw")
