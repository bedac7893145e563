# Device tests: the two esp32.NVS stand-ins, the tests' (fakes/esp32.py, in memory) and the
# emulated board's (boards/unix/emu/emu_nvs.py over nvs.bin), follow one model of ESP-IDF's NVS
# (boards/unix/README.md, "NVS"). The same scenarios run against both and must see the same.
import os
import sys

sys.path.insert(0, ("/".join(__file__.split("/")[:-3]) or ".") + "/boards/unix/emu")
import emu_nvs  # noqa: E402
import esp32  # noqa: E402  (fakes/esp32.py)
from checks import eq, true  # noqa: E402
from emu_flash import open_image  # noqa: E402
from upcert.store_nvs import NvsStore  # noqa: E402

_SIZE = 24576
_n = [0]


class _Fake:
    # fakes/esp32.py: an in-memory partition; power_cut() is its own helper.
    name = "fake"

    def __init__(self):
        esp32.reset()
        self.NVS = esp32.NVS

    def cut(self):
        esp32.power_cut()


class _Emu:
    # The emulated board's NVS over a real nvs.bin: a power cut ends the interpreter, so only
    # the file is left; the next boot loads it again (emu_boot.py).
    name = "emulator"
    NVS = emu_nvs.NVS

    def __init__(self):
        _n[0] += 1
        self.path = "%s/model-nvs%d.bin" % (os.getenv("UPCERT_TEST_TMP") or "/tmp", _n[0])
        try:
            os.remove(self.path)
        except OSError:
            pass
        self.f = open_image(self.path, _SIZE)
        emu_nvs.install(emu_nvs.NvsStore(self.f, _SIZE).load())

    def cut(self):
        self.f.close()
        self.f = open(self.path, "r+b")
        emu_nvs.install(emu_nvs.NvsStore(self.f, _SIZE).load())


def _get(nvs, key, size=16):
    # The blob, or the errno of the OSError reading it.
    buf = bytearray(size)
    try:
        return bytes(buf[: nvs.get_blob(key, buf)])
    except OSError as e:
        return e.args[0]


def _scenario(env):
    # What a program sees, step by step, with power cuts between.
    seen = []
    a, a2, b = env.NVS("upcert"), env.NVS("upcert"), env.NVS("other")
    a.set_blob("k", b"one")
    seen += [_get(a, "k"), _get(a2, "k"), _get(b, "k")]  # visible at once, to every handle
    env.cut()
    seen.append(_get(env.NVS("upcert"), "k"))  # never committed: lost
    a = env.NVS("upcert")
    a.set_blob("k", b"one")
    a.commit()
    a.set_blob("k", b"two")
    a.set_blob("j", b"new")
    seen += [_get(a, "k"), _get(a, "j")]
    env.cut()
    a = env.NVS("upcert")
    seen += [_get(a, "k"), _get(a, "j")]  # the committed value stands, the later sets are lost
    a.erase_key("k")
    seen.append(_get(a, "k"))
    env.cut()
    a = env.NVS("upcert")
    seen.append(_get(a, "k"))  # an erase not committed is lost too
    a.erase_key("k")
    a.commit()
    env.cut()
    a = env.NVS("upcert")
    seen.append(_get(a, "k"))
    try:
        a.erase_key("k")
    except OSError as e:
        seen.append(e.args[0])
    a.set_blob("k", b"longer than four")
    seen.append(_get(a, "k", 4))  # buffer too small
    env.NVS("other").set_blob("x", b"1")
    a.commit()  # the partition is committed as a whole: the other handle's set too
    env.cut()
    seen += [_get(env.NVS("upcert"), "k", 32), _get(env.NVS("other"), "x")]
    return seen


_WANT = [
    b"one", b"one", -4354,
    -4354,
    b"two", b"new",
    b"one", -4354,
    -4354,
    b"one",
    -4354, -4354,
    -4364,
    b"longer than four", b"1",
]


def test_both_stand_ins_follow_one_model():
    got = {}
    for env in (_Fake(), _Emu()):
        got[env.name] = _scenario(env)
        eq(got[env.name], _WANT, env.name)
    eq(got["fake"], got["emulator"], "fake and emulator alike")


def test_the_fake_is_the_emulators_nvs():
    # One implementation, so they cannot drift apart; the fake only adds `calls`.
    true(issubclass(esp32.NVS, emu_nvs.NVS), "fakes/esp32.NVS extends emu_nvs.NVS")


class _Cut(Exception):
    pass


class _CutAtCommit:
    # An NVS handle whose commit() never happens: the power is cut just before it.
    def __init__(self, nvs):
        self._nvs = nvs

    def get_blob(self, key, buf):
        return self._nvs.get_blob(key, buf)

    def set_blob(self, key, value):
        return self._nvs.set_blob(key, value)

    def commit(self):
        raise _Cut()


def test_nvs_store_flip_cut_before_commit_is_lost_on_both():
    # NvsStore's commit() is set_blob("slots"), then commit(). Cut between the two: the new
    # journal is read back at once, but after the cut slot A is active again, on both.
    A = (b"\x30\x03certA" * 20, b"\x30\x03keyA" * 10)
    B = (b"\x30\x03certB" * 30, b"\x30\x03keyB" * 10)
    for make in (_Fake, _Emu):
        env = make()
        NvsStore(env.NVS("upcert")).write(*A)
        NvsStore(env.NVS("upcert")).stage(*B)
        try:
            NvsStore(_CutAtCommit(env.NVS("upcert"))).commit()
        except _Cut:
            pass
        before = NvsStore(env.NVS("upcert")).certificate()
        env.cut()
        s = NvsStore(env.NVS("upcert"))
        eq((before, s.certificate(), s.staged()), (B[0], A[0], B), env.name)
