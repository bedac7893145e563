# Device tests for what the host calls on a board (firmware/upcert/hostcalls.py and
# hostcalls_atecc.py, through host_tools/upcert/board/transport.py Board.call): provisioning an fs
# store, reading it back, the TLS load and key/certificate pair check, status, the certificate
# view of `upcert cert inspect --device`, and the ATECC608 steps over a fake chip. The board
# module is a stand-in here (sys.modules["board"]), as board.py is the only code that builds
# hardware. Every answer must survive repr() -> eval(), as the host parses it.
import hashlib
import json
import os
import sys
from binascii import hexlify, unhexlify

import testca
from certdata import EC_DER, EC_EXPECT, RSA_DER, RSA_EXPECT
from checks import eq, raises, tmpdir, true
from upcert import csr, derw, hostcalls, hostcalls_atecc, p256
from upcert.errors import AteccError, CertificateError, StoreError
from upcert.store_atecc import AteccStore
from upcert.store_fs import FsStore

SN = b"\x01\x23\xa1\xb2\xc3\xd4\xe5\xf6\xee"
_NOW = 1767225600  # 2026-01-01, unix seconds: TestCa validity around it
_n = [0]


class FakeChip:
    """ATECC method names over a 128-byte config zone and p256 keys; blank (zones unlocked)."""

    addr = 0x60

    def __init__(self):
        self.config = bytearray(128)
        self.config[0:4], self.config[8:13] = SN[:4], SN[4:]
        self.config[86] = self.config[87] = 0x55  # data, config zones unlocked
        self.config[88] = self.config[89] = 0xFF  # no slot locked
        self.keys = {}

    def serial(self):
        return SN

    def info(self):
        return b"\x00\x00\x60\x03"

    def read_config(self):
        return bytes(self.config)

    def write_config(self, offset, data):
        if self.config[87] != 0x55:
            raise AteccError("Write: config zone locked", status=0x0F)
        self.config[offset : offset + len(data)] = data

    def locked(self):
        return self.config[87] != 0x55, self.config[86] != 0x55

    def lock_config(self, confirm=False):
        eq(confirm, "LOCK", "lock_config confirm")
        self.config[87] = 0x00

    def lock_data(self, confirm=False):
        eq(confirm, "LOCK", "lock_data confirm")
        self.config[86] = 0x00

    def slot_config(self, n, config=None):
        c = config or self.config
        sc = c[20 + 2 * n] | c[21 + 2 * n] << 8
        kc = c[96 + 2 * n] | c[97 + 2 * n] << 8
        return {"genkey": bool(sc & 0x2000 and kc & 1), "locked": False}

    def genkey(self, slot):
        if not self.slot_config(slot)["genkey"] or self.config[87] == 0x55:
            raise AteccError("GenKey: execution error", status=0x0F)
        self.keys[slot] = p256.generate()
        return self.public_key(slot)

    def public_key(self, slot):
        return self.keys[slot].public_point()[1:]

    def sign_digest(self, slot, digest32):
        r, s = self.keys[slot].sign_digest(digest32)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class Board:
    """The board module as hostcalls sees it: NAME, store(config), atecc(store settings)."""

    NAME = "test-board"
    chip = None

    @staticmethod
    def store(cfg):
        st = cfg["store"]
        if st["kind"] == "atecc608":
            return AteccStore(Board.chip, st.get("slot", 0), st.get("spares", (2, 3, 4)),
                              st["root"])
        return FsStore(st["root"])

    @staticmethod
    def atecc(st):
        eq(st.get("address", 0x60), 0x60, "chip address")
        return Board.chip


sys.modules["board"] = Board


def _board(kind="fs"):
    """A folder standing for the board's /upcert.d with config.json for store `kind`; the
    config's path."""
    _n[0] += 1
    root = tmpdir("hc%d" % _n[0])
    cfg = {"thing": "dev1", "endpoint": "example.com", "store": {"kind": kind, "root": root}}
    if kind == "atecc608":
        cfg["store"].update({"slot": 0, "spares": [2, 3, 4]})
    with open(root + "/config.json", "w") as f:
        f.write(json.dumps(cfg))
    return root + "/config.json"


def _literal(value):
    # What the host does with an answer: the printed repr() read back as a literal.
    back = eval(repr(value))
    eq(back, value, "answer survives repr()")
    return back


def _sha(data):
    return hexlify(hashlib.sha256(data).digest()).decode()


def _pair(seed="dev"):
    ca = testca.TestCa()
    k = testca.key(seed)
    return ca, ca.issue("dev1", k.public_point(), _NOW - 86400, _NOW + 300 * 86400), k


def _roots(config_path, ca):
    path = config_path.rsplit("/", 1)[0] + "/roots.der"
    with open(path, "wb") as f:
        f.write(ca.cert())
    return path


def test_write_read_back_and_load_tls():
    path = _board()
    ca, cert, k = _pair()
    key = k.private_der()
    eq(_literal(hostcalls.write_credentials(cert, key, path)), True, "written")
    eq(_literal(hostcalls.credential_digests(path)), [_sha(cert), _sha(key)], "read back")
    eq(sorted(os.listdir(path.rsplit("/", 1)[0])), ["cert.der", "config.json", "key.der"],
       "the fs store's files, no tmp left")
    got = _literal(hostcalls.load_tls(path, _roots(path, ca)))
    eq(got, {"roots": 1, "pair": "EC"}, "loaded into tls, the pair checked")


def test_load_tls_refuses_a_key_that_is_not_the_certificates():
    path = _board()
    ca, cert, _ = _pair()
    hostcalls.write_credentials(cert, testca.key("other").private_der(), path)
    # mbedTLS itself loads such a pair without a word; the check says it.
    raises(CertificateError, hostcalls.load_tls, path, _roots(path, ca),
           contains=("not the certificate's key", "upcert provision"))


def test_load_tls_names_what_is_missing():
    path = _board()
    raises(StoreError, hostcalls.credential_digests, path, contains=("cert.der", "missing"))
    ca, cert, k = _pair()
    hostcalls.write_credentials(cert, k.private_der(), path)
    raises(StoreError, hostcalls.load_tls, path, path + ".none",
           contains=("trust anchors", "missing"))


def _rsa_key(modulus):
    # PKCS#8 PrivateKeyInfo around an RSAPrivateKey of which only the modulus is read.
    rsa = derw.seq(derw.uint(0), derw.tlv(0x02, b"\x00" + modulus), derw.uint(65537))
    alg = derw.seq(derw.oid("1.2.840.113549.1.1.1"), b"\x05\x00")
    return derw.seq(derw.uint(0), alg, derw.tlv(0x04, rsa))


def test_check_pair_for_rsa_and_ec():
    from upcert.x509 import Certificate

    modulus = bytes(Certificate(RSA_DER).public_key)
    eq(hostcalls.check_pair(RSA_DER, _rsa_key(modulus)), "RSA", "PKCS#8 RSA key of the cert")
    eq(hostcalls.check_pair(RSA_DER, derw.seq(derw.uint(0), derw.tlv(0x02, b"\x00" + modulus))),
       "RSA", "a bare RSAPrivateKey (PKCS#1)")
    other = bytes([modulus[0] ^ 1]) + modulus[1:]
    raises(CertificateError, hostcalls.check_pair, RSA_DER, _rsa_key(other),
           contains="not the certificate's key")
    _, cert, k = _pair()
    eq(hostcalls.check_pair(cert, k.private_der()), "EC", "P-256")
    raises(CertificateError, hostcalls.check_pair, cert, b"\x30\x03\x02\x01",
           contains="private key")


def test_status_reports_the_identity_or_what_is_wrong():
    path = _board()
    st = _literal(hostcalls.status(path))
    eq(st["board"], "test-board", "board name")
    eq(st["thing"], "dev1", "thing")
    eq(st["endpoint"], "example.com:8883", "endpoint with the default port")
    true(st["error"].startswith("StoreError: ") and "missing" in st["error"], st["error"])
    _, cert, k = _pair()
    hostcalls.write_credentials(cert, k.private_der(), path)
    st = _literal(hostcalls.status(path))
    true("error" not in st, "no error: %r" % (st,))
    eq(st["cert_id"], _sha(cert), "certificate id: SHA-256 of the DER")
    eq(st["subject_cn"], "dev1", "CN")
    eq(st["store"]["kind"], "fs", "store describe()")
    true(len(st["not_after"]) == 20 and st["not_after"].endswith("Z"), st["not_after"])
    true(type(st["days_left"]) is float, "days_left a number")
    st = _literal(hostcalls.status(path + ".none"))
    true(st["error"].startswith("ConfigError: "), st["error"])
    eq(st["board"], "test-board", "board name, even without a config")


def test_certificate_view_der_pem_bundle_and_garbage():
    v = _literal(hostcalls.certificate_view(EC_DER))
    for name in ("serial", "subject_cn", "issuer_cn", "key_type", "key_bits", "sig_alg",
                 "cert_id"):
        eq(v[name], EC_EXPECT[name], "view " + name)
    eq(v["not_after"], EC_EXPECT["not_after_tuple"], "not_after")
    eq((v["count"], v["sig_alg_aws_ok"]), (1, True), "one certificate, a signature AWS takes")
    v = _literal(hostcalls.certificate_view(EC_DER + RSA_DER))
    eq((v["count"], v["subject_cn"]), (2, "dev1"), "a bundle: the first of two")
    pem = (testca.pem(RSA_DER) + testca.pem(EC_DER)).encode()
    v = _literal(hostcalls.certificate_view(pem))
    eq((v["count"], v["subject_cn"], v["key_bits"]), (2, RSA_EXPECT["subject_cn"], 2048), "PEM")
    v = _literal(hostcalls.certificate_view(EC_DER + b"\x00\x01"))
    true(set(v) == {"error"} and v["error"], "garbage after the certificate: %r" % (v,))
    v = _literal(hostcalls.certificate_view(b"\x30\x03\x02\x01\x00"))
    true(set(v) == {"error"}, "not a certificate: %r" % (v,))


# ---- ATECC608 steps ------------------------------------------------------------------------------

_SLOTS = [0x2087 if n in (0, 2, 3, 4) else 0 for n in range(16)]
_KEYS = [0x0033 if n in (0, 2, 3, 4) else 0x003C for n in range(16)]


def _words(words):
    return hexlify(b"".join(bytes((w & 0xFF, w >> 8)) for w in words)).decode()


def _csr_key(csr_hex):
    # The CSR's public point, after its signature is checked (testca.read_csr).
    return testca.read_csr(csr.pem(unhexlify(csr_hex)))[1]


def _provisioned_chip():
    """Config path of a board whose blank chip went through the host's provisioning steps."""
    Board.chip = FakeChip()
    path = _board("atecc608")
    st = {"kind": "atecc608", "address": 0x60}
    p = _literal(hostcalls_atecc.probe(st))
    eq(p["serial"], hexlify(SN).decode(), "serial")
    eq(unhexlify(p["config"])[87], 0x55, "config zone unlocked")
    raises(AteccError, hostcalls_atecc.key, st, 0, True, [["CN", "dev1"]])  # GenKey: not yet
    back = unhexlify(_literal(hostcalls_atecc.configure(st, _words(_SLOTS), _words(_KEYS)))
                     ["config"])
    eq(hexlify(back[20:52]).decode(), _words(_SLOTS), "SlotConfig read back")
    eq(hexlify(back[96:128]).decode(), _words(_KEYS), "KeyConfig read back")
    eq(_literal(hostcalls_atecc.lock_config(st)), {"locked": [True, False]}, "config locked")
    k = _literal(hostcalls_atecc.key(st, 0, True, [["CN", "dev1"]]))
    eq(k["pub_again"], k["pub"], "the slot's key read again")
    eq(_csr_key(k["csr"]), b"\x04" + unhexlify(k["pub"]), "the CSR is for the chip's key")
    eq(_literal(hostcalls_atecc.key(st, 0, False, [["CN", "dev1"]]))["pub"], k["pub"],
       "gen False: the key already there")
    ca = testca.TestCa()
    cert = ca.issue("dev1", b"\x04" + unhexlify(k["pub"]), _NOW - 86400, _NOW + 86400)
    eq(_literal(hostcalls_atecc.store_write(hexlify(cert).decode(), 0, path)), {}, "stored")
    eq(_literal(hostcalls_atecc.lock_data(st)), {"locked": [True, True]}, "data locked")
    return path, cert, k["pub"]


def _signs(path, pub):
    d = hashlib.sha256(os.urandom(8)).digest()
    v = _literal(hostcalls_atecc.verify(hexlify(d).decode(), path))
    eq(v["point"], "04" + pub, "the signer is the key in the chip")
    true(p256.verify_digest(unhexlify(v["point"]), d, int(v["r"], 16), int(v["s"], 16)),
         "a signature through the store verifies")
    eq(v["no_key"], True, "no private key bytes handed out")
    return v


def test_chip_provisioning_steps():
    path, cert, pub = _provisioned_chip()
    v = _signs(path, pub)
    eq(v["cert"], _sha(cert), "the certificate reads back")
    eq((v["describe"]["kind"], v["describe"]["key_slot"]), ("atecc608", 0), "describe")


def test_chip_rotation_steps():
    path, _, pub = _provisioned_chip()
    k = _literal(hostcalls_atecc.new_key(path))
    eq((k["thing"], k["old"], k["slot"], k["old_pub"]), ("dev1", 0, 2, pub), "a spare slot")
    eq(k["ref"], "ATECC608 slot=2 sn=%s" % hexlify(SN).decode(), "key reference")
    eq(_csr_key(k["csr"]), b"\x04" + unhexlify(k["pub"]), "the CSR is for the new key")
    cert = testca.TestCa().issue("dev1", b"\x04" + unhexlify(k["pub"]), _NOW - 9, _NOW + 9)
    cert = hexlify(cert).decode()
    s = _literal(hostcalls_atecc.stage(cert, k["ref"], 0, False, path))
    eq(s, {"staged": True, "old_pub": pub, "slot": 0}, "staged; slot 0 still active")
    _signs(path, pub)
    s = _literal(hostcalls_atecc.stage(cert, k["ref"], 0, True, path))
    eq((s["slot"], s["old_pub"]), (2, pub), "committed: slot 2 active, slot 0 intact")
    _signs(path, k["pub"])
    # The host calls each step with keyword arguments (Board.call, chip.CODE's **A).
    k2 = hostcalls_atecc.new_key(**{"config_path": path})
    eq((k2["old"], k2["slot"]), (2, 3), "next spare slot")


def test_host_calls_are_not_resident_in_the_agent():
    # The agent's modules never import these (they cost nothing while it runs).
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    fw = here + "/../../firmware/upcert"
    for name in os.listdir(fw):
        if name.endswith(".py") and not name.startswith("hostcalls"):
            with open(fw + "/" + name) as f:
                true("hostcalls" not in f.read(), name + " mentions hostcalls")
