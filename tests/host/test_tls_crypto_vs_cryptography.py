"""The TLS client's primitives (upcert.hmac256, gcm, cbc, sha512, rsa, run by the MicroPython unix
port) checked on random inputs (fixed seeds) against independent code: pyca/cryptography (AES-GCM,
AES-CBC, RSA signing), Python's hashlib and hmac, and a TLS 1.2 PRF written here from RFC 5246 §5
on top of Python's hmac."""

import hashlib
import hmac
import json
import os
import random
import subprocess

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.tools import ROOT, micropython_cmd

# Runs under MicroPython: argv[1] a JSON list of jobs {"op": ..., hex fields}; one JSON line each.
DEVICE = r"""
import sys, json, hashlib
from binascii import hexlify, unhexlify
from upcert import cbc, gcm, hmac256, rsa, sha512
H = lambda b: hexlify(b).decode()
U = unhexlify
HASHES = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}
def run(j):
    op = j["op"]
    if op == "hmac":
        return H(hmac256.Hmac(U(j["key"]), HASHES[j["hash"]]).digest(U(j["msg"])))
    if op == "prf":
        return H(hmac256.prf(U(j["secret"]), U(j["label"]), U(j["seed"]), j["n"]))
    if op == "sha":
        h = getattr(sha512, j["hash"])()
        data = U(j["msg"])
        for i in range(0, len(data), j["step"]):
            h.update(data[i : i + j["step"]])
        return H(h.digest())
    if op == "gcm":
        g = gcm.GCM(U(j["key"]))
        sealed = g.seal(U(j["nonce"]), U(j["aad"]), U(j["pt"]))
        opened = g.open(U(j["nonce"]), U(j["aad"]), U(j["ref"]))
        bad = bytearray(U(j["ref"]))
        bad[j["flip"]] ^= 1
        try:
            g.open(U(j["nonce"]), U(j["aad"]), bad)
            rejected = False
        except ValueError:
            rejected = True
        return [H(sealed), H(opened), rejected]
    if op == "cbc":
        c = cbc.CBC(U(j["key"]), U(j["mac_key"]), HASHES[j["hash"]])
        fixed = c.seal(U(j["hdr"]), U(j["frag"]), U(j["iv"]))
        fresh = c.seal(U(j["hdr"]), U(j["frag"]))
        opened = c.open(U(j["hdr"]), U(j["ref"]))
        verdicts = []
        for rec in j["bad"]:
            try:
                c.open(U(j["hdr"]), U(rec))
                verdicts.append(False)
            except ValueError:
                verdicts.append(True)
        return [H(fixed), H(fresh), H(opened), verdicts]
    if op == "rsa":
        key = rsa.PublicKey.from_spki(U(j["spki"]))
        out = [key.bits]
        for c in j["checks"]:
            d = U(c["digest"])
            if c["scheme"] == "pkcs1":
                out.append(rsa.verify_pkcs1(key, c["hash"], d, U(c["sig"])))
            else:
                out.append(rsa.verify_pss(key, c["hash"], d, U(c["sig"]), c["salt"]))
        return out
for j in json.load(open(sys.argv[1])):
    print(json.dumps(run(j)))
"""


def device(tmp_path, jobs):
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "script.py").write_text(DEVICE)
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
    cmd = micropython_cmd() + [str(tmp_path / "script.py"), str(tmp_path / "jobs.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == len(jobs)
    return rows


def _bytes(rng, n):
    return rng.randbytes(n)


def p_sha256(secret, label, seed, n):
    """TLS 1.2 PRF, RFC 5246 §5, from Python's hmac: the reference for hmac256.prf."""
    out, a = b"", label + seed
    while len(out) < n:
        a = hmac.new(secret, a, hashlib.sha256).digest()
        out += hmac.new(secret, a + label + seed, hashlib.sha256).digest()
    return out[:n]


def test_hmac_and_prf_vs_python_hmac(tmp_path):
    rng = random.Random(4231)
    jobs = []
    for i in range(80):
        name = "sha1" if i % 4 == 3 else "sha256"
        key = _bytes(rng, rng.choice([0, 1, 20, 32, 63, 64, 65, rng.randrange(150)]))
        jobs.append({"op": "hmac", "hash": name, "key": key.hex(),
                     "msg": _bytes(rng, rng.randrange(300)).hex()})
    for _ in range(40):
        jobs.append({"op": "prf", "secret": _bytes(rng, rng.choice([0, 32, 48, rng.randrange(90)])).hex(),
                     "label": rng.choice([b"master secret", b"key expansion", b"client finished",
                                          b"x"]).hex(),
                     "seed": _bytes(rng, rng.choice([0, 64, rng.randrange(90)])).hex(),
                     "n": rng.choice([0, 1, 12, 32, 48, 104, rng.randrange(300)])})
    for job, got in zip(jobs, device(tmp_path, jobs), strict=True):
        if job["op"] == "hmac":
            want = hmac.new(bytes.fromhex(job["key"]), bytes.fromhex(job["msg"]), job["hash"])
            assert got == want.hexdigest(), job
        else:
            want = p_sha256(*(bytes.fromhex(job[k]) for k in ("secret", "label", "seed")), job["n"])
            assert got == want.hex(), job


def test_sha384_sha512_vs_hashlib(tmp_path):
    rng = random.Random(1804)
    sizes = [0, 1, 111, 112, 127, 128, 129, 239, 240, 255, 256, 257, 1024, 3000]
    sizes += [rng.randrange(3001) for _ in range(26)]
    jobs = [{"op": "sha", "hash": rng.choice(["sha384", "sha512"]),
             "msg": _bytes(rng, n).hex(), "step": rng.choice([1, 13, 128, 1000, 4000])}
            for n in sizes]
    for job, got in zip(jobs, device(tmp_path, jobs), strict=True):
        assert got == hashlib.new(job["hash"], bytes.fromhex(job["msg"])).hexdigest(), job


def test_gcm_vs_cryptography(tmp_path):
    rng = random.Random(3800)
    jobs = []
    for i in range(60):
        key, nonce = _bytes(rng, 16), _bytes(rng, 12)
        n = [0, 1, 15, 16, 17, 255, 256, 257, 2000][i] if i < 9 else rng.randrange(2001)
        pt, aad = _bytes(rng, n), _bytes(rng, rng.choice([0, 13, rng.randrange(100)]))
        ref = AESGCM(key).encrypt(nonce, pt, aad)
        jobs.append({"op": "gcm", "key": key.hex(), "nonce": nonce.hex(), "aad": aad.hex(),
                     "pt": pt.hex(), "ref": ref.hex(), "flip": rng.randrange(len(ref))})
    for job, (sealed, opened, rejected) in zip(jobs, device(tmp_path, jobs), strict=True):
        assert sealed == job["ref"], job  # the same ciphertext and tag as cryptography
        assert opened == job["pt"], job
        assert rejected, job  # one flipped bit anywhere: refused


def cbc_seal(key, mac_key, name, hdr, frag, iv, pad=None):
    """RFC 5246 §6.2.3.2 GenericBlockCipher from cryptography's AES-CBC and Python's hmac; pad: a
    chosen padding length (any legal one; the fewest when None)."""
    mac = hmac.new(mac_key, hdr + len(frag).to_bytes(2, "big") + frag, name).digest()
    if pad is None:
        pad = 15 - (len(frag) + len(mac)) % 16
    plain = frag + mac + bytes([pad]) * (pad + 1)
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + enc.update(plain) + enc.finalize()


def cbc_open(key, mac_key, name, hdr, rec):
    dec = Cipher(algorithms.AES(key), modes.CBC(rec[:16])).decryptor()
    plain = dec.update(rec[16:]) + dec.finalize()
    pad = plain[-1]
    size = hashlib.new(name).digest_size
    assert plain[-pad - 1:] == bytes([pad]) * (pad + 1)
    frag, mac = plain[: -pad - 1 - size], plain[-pad - 1 - size: -pad - 1]
    assert hmac.new(mac_key, hdr + len(frag).to_bytes(2, "big") + frag, name).digest() == mac
    return frag


def test_cbc_records_vs_independent_implementation(tmp_path):
    rng = random.Random(5246)
    jobs = []
    for i in range(50):
        name = "sha1" if i % 3 == 2 else "sha256"
        key, mac_key = _bytes(rng, 16), _bytes(rng, 20 if name == "sha1" else 32)
        hdr = rng.randrange(2**64).to_bytes(8, "big") + bytes([rng.choice([22, 23, 21])]) + b"\3\3"
        frag = _bytes(rng, rng.choice([0, 1, 15, 16, 17, rng.randrange(2001)]))
        iv = _bytes(rng, 16)
        # The other side may pad more than needed (up to 255, RFC 5246 §6.2.3.2).
        extra = rng.choice([0, 16, 64, 240]) if i % 2 else 0
        pad = (15 - (len(frag) + len(mac_key)) % 16) + extra
        pad = pad if pad <= 255 else None
        ref = cbc_seal(key, mac_key, name, hdr, frag, iv, pad)
        bad = []
        for pos in (16, len(ref) - 17, len(ref) - 1, rng.randrange(len(ref))):
            b = bytearray(ref)
            b[pos] ^= 1 << rng.randrange(8)
            bad.append(b.hex())
        bad.append(cbc_seal(key, mac_key, name, hdr[:-1] + b"\1", frag, iv).hex())  # other header
        jobs.append({"op": "cbc", "hash": name, "key": key.hex(), "mac_key": mac_key.hex(),
                     "hdr": hdr.hex(), "frag": frag.hex(), "iv": iv.hex(), "ref": ref.hex(),
                     "bad": bad})
    ivs = set()
    for job, (fixed, fresh, opened, verdicts) in zip(jobs, device(tmp_path, jobs), strict=True):
        args = [bytes.fromhex(job[k]) for k in ("key", "mac_key")] + [job["hash"]]
        hdr, frag = bytes.fromhex(job["hdr"]), bytes.fromhex(job["frag"])
        want = cbc_seal(*args, hdr, frag, bytes.fromhex(job["iv"]))
        assert fixed == want.hex(), job  # the same bytes, with the same IV
        assert cbc_open(*args, hdr, bytes.fromhex(fresh)) == frag, job  # its own random IV
        ivs.add(fresh[:32])
        assert opened == job["frag"], job  # it opens the reference record (any padding)
        assert verdicts == [True] * len(job["bad"]), job  # every tampered record refused
    assert len(ivs) == len(jobs), "a fresh IV per record"


def _spki(key):
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _prime(rng, bits):
    # Miller-Rabin (64 rounds) over random odd candidates with the top two bits set.
    while True:
        c = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if any(c % p == 0 for p in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)):
            continue
        d, r = c - 1, 0
        while not d & 1:
            d, r = d >> 1, r + 1
        for _ in range(64):
            x = pow(rng.randrange(2, c - 1), d, c)
            if x in (1, c - 1):
                continue
            for _ in range(r - 1):
                x = pow(x, 2, c)
                if x == c - 1:
                    break
            else:
                break
        else:
            return c


def rsa_key(bits, e, rng):
    """An RSA private key with a modulus of exactly `bits` bits (OpenSSL makes bits - 1 for some
    odd sizes; 2049 is the case where the PSS encoded message is one byte shorter than n)."""
    if bits % 8 == 0:
        return rsa.generate_private_key(e, bits)
    while True:
        p, q = _prime(rng, (bits + 1) // 2), _prime(rng, bits // 2)
        n, phi = p * q, (p - 1) * (q - 1)
        if n.bit_length() == bits and phi % e:
            d = pow(e, -1, phi)
            nums = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p),
                                         rsa.RSAPublicNumbers(e, n))
            return nums.private_key()


HASHES = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


@pytest.mark.parametrize("bits,e", [(2048, 65537), (2049, 65537), (3072, 3), (4096, 65537)])
def test_rsa_vs_cryptography(tmp_path, bits, e):
    rng = random.Random(8017 + bits)
    key = rsa_key(bits, e, rng)
    assert key.key_size == bits
    checks, want = [], []
    for i in range(12):
        name = ["sha256", "sha384", "sha512"][i % 3]
        msg = _bytes(rng, rng.randrange(500))
        digest = hashlib.new(name, msg).digest()
        other = "sha256" if name != "sha256" else "sha384"
        if i % 2 == 0:
            sig = key.sign(msg, padding.PKCS1v15(), HASHES[name])
            checks.append({"scheme": "pkcs1", "hash": name, "digest": digest.hex(), "sig": sig.hex()})
            want.append(True)
        else:
            salt = [len(digest), 0, padding.PSS.MAX_LENGTH, 20][i // 2 % 4]
            sig = key.sign(msg, padding.PSS(padding.MGF1(HASHES[name]), salt), HASHES[name])
            n_salt = salt
            if salt is padding.PSS.MAX_LENGTH:  # emLen - hLen - 2 (RFC 8017 §9.1.1)
                n_salt = (key.key_size - 1 + 7) // 8 - len(digest) - 2
            for given, ok in ((None, True), (n_salt, True), (n_salt + 1, False)):
                checks.append({"scheme": "pss", "hash": name, "digest": digest.hex(),
                               "sig": sig.hex(), "salt": given})
                want.append(ok)
        scheme = checks[-1]["scheme"]
        salt = None  # PSS: any salt length
        bad = bytearray(sig)
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        wrong = hashlib.new(other, msg).digest()
        for d, s, h in ((digest, bytes(bad), name), (wrong, sig, other),
                        (hashlib.new(name, msg + b"!").digest(), sig, name)):
            checks.append({"scheme": scheme, "hash": h, "digest": d.hex(), "sig": s.hex(),
                           "salt": salt})
            want.append(False)
    (out,) = device(tmp_path, [{"op": "rsa", "spki": _spki(key).hex(), "checks": checks}])
    assert out[0] == bits
    assert out[1:] == want
