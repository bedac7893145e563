# Device tests of the emulated board's machine, time, ntptime and network stand-ins.
import errno
import io
import os
import sys

sys.path.insert(0, ("/".join(__file__.split("/")[:-3]) or ".") + "/boards/unix/emu")
import emu_host  # noqa: E402
import emu_machine as machine  # noqa: E402
import emu_network as network  # noqa: E402
import emu_ntptime as ntptime  # noqa: E402
import emu_rtc  # noqa: E402
import emu_time as time  # noqa: E402
from emu_flash import open_image  # noqa: E402

_TMP = os.getenv("UPCERT_TEST_TMP") or "/tmp"


def _raises(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised by %r" % (exc.__name__, fn))


def test_reset_cause_unique_id_freq():
    machine.configure(machine.PWRON_RESET, b"\x24\x0a\xc4\x01\x02\x03")
    if machine.reset_cause() != 1 or machine.SOFT_RESET != 5 or machine.WDT_RESET != 3:
        raise AssertionError("reset causes follow the ESP32 port")
    if machine.unique_id() != b"\x24\x0a\xc4\x01\x02\x03":
        raise AssertionError("unique_id")
    machine.freq(240000000)
    if machine.freq() != 240000000:
        raise AssertionError("freq")
    _raises(ValueError, machine.freq, 100000000)


def test_soft_reset_is_system_exit():
    _raises(SystemExit, machine.soft_reset)
    if not machine.soft_reset_requested():
        raise AssertionError("flag")


def test_resets_need_the_host_and_send_requests():
    emu_host.attach(None)
    e = _raises(OSError, machine.WDT, timeout=2000)
    if "upcert board run" not in e.args[1]:
        raise AssertionError(e.args)
    out = io.BytesIO()
    emu_host.attach(out)
    try:
        machine.WDT(timeout=2000).feed()
    finally:
        emu_host.attach(None)
    if out.getvalue() != b"\x1b_upcert:wdt:2000\x1b\\\x1b_upcert:feed\x1b\\":
        raise AssertionError(out.getvalue())


def test_pin_and_i2c():
    p = machine.Pin(5, machine.Pin.OUT, value=1)
    if p.value() != 1:
        raise AssertionError("pin value")
    p.off()
    if p() != 0:
        raise AssertionError("pin off")
    _raises(ValueError, machine.Pin, 24)
    _raises(ValueError, machine.Pin, 34, machine.Pin.OUT)
    i2c = machine.I2C(0, scl=machine.Pin(17), sda=machine.Pin(16), freq=100000)
    if i2c.scan() != []:
        raise AssertionError("empty bus")
    for call in (lambda: i2c.writeto(0x60, b"\x00"), lambda: i2c.readfrom(0x35, 4),
                 lambda: i2c.readfrom_mem(0x60, 0, 4)):
        if _raises(OSError, call).args[0] != errno.ENODEV:
            raise AssertionError("a transfer without a device must fail with ENODEV")
    _raises(ValueError, machine.I2C, 2)


def test_rtc_and_time():
    emu_rtc.install(open_image(_TMP + "/rtc.bin", 8))
    rtc = machine.RTC()
    rtc.datetime((2000, 1, 1, 5, 0, 0, 10, 0))
    t = time.time()
    if not 946684810 <= t <= 946684812:
        raise AssertionError("time() after RTC set: %d" % t)
    g = time.gmtime()
    if len(g) != 8 or g[:3] != (2000, 1, 1) or g[6] != 5:  # 2000-01-01 was a Saturday
        raise AssertionError(g)
    if time.localtime(0) != (1970, 1, 1, 0, 0, 0, 3, 1):
        raise AssertionError("localtime is UTC")
    if time.mktime((2024, 2, 29, 12, 0, 0, 0, 0)) != 1709208000:
        raise AssertionError("mktime")
    if time.mktime((2023, 14, 1, 0, 0, 0, 0, 0)) != time.mktime((2024, 2, 1, 0, 0, 0, 0, 0)):
        raise AssertionError("mktime normalises months")
    dt = rtc.datetime()
    if len(dt) != 8 or dt[0] != 2000 or dt[3] != 5:
        raise AssertionError(dt)
    _raises(ValueError, rtc.datetime, (2000, 1, 1))
    # The RTC register is a file: a new interpreter (a reset) reads the same time.
    emu_rtc.install(open(_TMP + "/rtc.bin", "r+b"))
    if not 946684810 <= time.time() <= 946684813:
        raise AssertionError("RTC lost across a reset")


def test_ntptime():
    emu_rtc.install(open_image(_TMP + "/rtc2.bin", 8))
    machine.RTC().datetime((2000, 1, 1, 5, 0, 0, 0, 0))
    ntptime.configure(False)
    ntptime.timeout = 0
    e = _raises(OSError, ntptime.settime)
    if e.args[0] != errno.ETIMEDOUT or time.time() > 946684800 + 60:
        raise AssertionError("unreachable NTP must time out and leave the clock alone")
    ntptime.configure(True)
    ntptime.settime()
    if abs(time.time() - emu_rtc.host_us() // 1000000) > 1:
        raise AssertionError("settime must set the RTC to the host's time")


def test_wlan():
    machine.configure(1, b"\x24\x0a\xc4\x01\x02\x03")
    sta = network.WLAN(network.STA_IF)
    sta.active(False)
    if sta.isconnected() or sta.status() != network.STAT_IDLE:
        raise AssertionError("inactive")
    _raises(OSError, sta.connect, "ssid", "pw")
    sta.active(True)
    sta.connect("ssid", "pw")
    if not network.WLAN(network.STA_IF).isconnected():
        raise AssertionError("objects of one interface share their state")
    if sta.status() != network.STAT_GOT_IP or sta.ifconfig()[0] != "127.0.0.1":
        raise AssertionError("connected")
    if sta.config("mac") != machine.unique_id() or sta.config("ssid") != "ssid":
        raise AssertionError("config")
    if network.WLAN(network.AP_IF).config("mac")[5] != 0x04:
        raise AssertionError("AP MAC is the base MAC + 1")
    _raises(ValueError, network.WLAN, 5)
