# The ATECC608 steps the host calls on a board (host_tools/upcert/board/chip.py, through
# Board.call): configure and lock a blank chip, make a key and have the chip sign a CSR, store
# the identity, check it, and rotate to a spare key slot. Bytes travel as hex strings; each call
# returns a dict. Never imported by the agent.
import hashlib
from binascii import hexlify, unhexlify

CONFIG = "/upcert.d/config.json"


def _h(b):
    return hexlify(b).decode()


def _chip(st):
    # The driver on the board's bus for store settings st (board.atecc).
    import board

    return board.atecc(st)


def _config(config_path):
    from upcert import config

    return config.load(config_path)


def _store(config_path):
    import board

    return board.store(_config(config_path))


def probe(store):
    """The chip's config zone and serial number: {'config': hex, 'serial': hex}."""
    c = _chip(store)
    return {"config": _h(c.read_config()), "serial": _h(c.serial())}


def configure(store, slot_config, key_config):
    """Write SlotConfig (config zone byte 20) and KeyConfig (byte 96), hex; the config zone
    read back: {'config': hex}. The config zone must be unlocked (ATECC608 datasheet §2.2)."""
    c = _chip(store)
    c.write_config(20, unhexlify(slot_config))
    c.write_config(96, unhexlify(key_config))
    return {"config": _h(c.read_config())}


def lock_config(store):
    """Lock the config zone (permanent): {'locked': [config, data]}."""
    c = _chip(store)
    c.lock_config(confirm="LOCK")
    return {"locked": list(c.locked())}


def lock_data(store):
    """Lock the data zone (permanent): {'locked': [config, data]}."""
    c = _chip(store)
    c.lock_data(confirm="LOCK")
    return {"locked": list(c.locked())}


def key(store, slot, gen, subject):
    """A new key in `slot` (gen) or the one there, and a CSR for `subject` ([[attr, value]])
    signed by the chip: {'pub': X||Y hex, 'pub_again': the slot's key read again, 'csr': DER hex}."""
    from upcert import csr
    from upcert.atecc import Signer

    c = _chip(store)
    pub = c.genkey(slot) if gen else c.public_key(slot)
    return {"pub": _h(pub), "pub_again": _h(c.public_key(slot)),
            "csr": _h(csr.build(Signer(c, slot), subject))}


def store_write(cert, slot, config_path=CONFIG):
    """Make (cert DER hex, this chip's key slot `slot`) the store's identity: {}."""
    s = _store(config_path)
    s.write(unhexlify(cert), s.ref(slot))
    return {}


def verify(digest, config_path=CONFIG):
    """The stored identity, checked: SHA-256 of the certificate, the signer's public point, a
    signature of `digest` (hex, 32 bytes) as r, s in hex, whether a private key is handed out
    (it must not be), and describe()."""
    s = _store(config_path)
    g = s.signer()
    r, t = g.sign_digest(unhexlify(digest))
    return {"cert": _h(hashlib.sha256(s.certificate()).digest()), "point": _h(g.public_point()),
            "r": "%x" % r, "s": "%x" % t, "no_key": s.private_key() is None,
            "describe": s.describe()}


def new_key(config_path=CONFIG):
    """Rotation: a new key in a spare key slot and a CSR for the thing signed with it:
    {'thing', 'old' and 'slot' (key slots), 'ref' (key reference), 'pub', 'old_pub', 'csr'}."""
    import gc

    import board

    import upcert

    cfg = _config(config_path)
    upcert.drop("config")  # keygen + CSR need the room (p256, csr: ~30 KB of code)
    s = board.store(cfg)
    old = s.key_slot()
    g, ref = s.new_key()
    from upcert.store_atecc import parse_ref  # loaded already by board.store

    n = parse_ref(ref)[0]
    out = {"thing": cfg["thing"], "old": old, "slot": n, "ref": ref.decode(),
           "pub": _h(s.chip.public_key(n)), "old_pub": _h(s.chip.public_key(old))}
    gc.collect()
    from upcert import csr

    out["csr"] = _h(csr.build(g, [["CN", cfg["thing"]]]))
    return out


def stage(cert, ref, old, commit, config_path=CONFIG):
    """Rotation: stage (cert DER hex, key reference) in the idle slot A/B, then commit when
    `commit`: {'staged', 'old_pub' (key slot `old` read again), 'slot' (the active key slot)}."""
    s = _store(config_path)
    s.stage(unhexlify(cert), ref.encode())
    out = {"staged": s.staged() is not None, "old_pub": _h(s.chip.public_key(old))}
    if commit:
        s.commit()
    out["slot"] = _store(config_path).key_slot()
    return out
