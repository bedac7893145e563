"""The emulated board's network faults, set by the host while the board runs: the access point
gone (Wi-Fi down), DNS failing, slow TCP connects, a slow DHCP lease. The board reads
<state>/network.bin at every Wi-Fi and socket call (boards/unix/emu/emu_network.py, emu_socket.py)
and fails as an ESP32 does (boards/unix/README.md, "Network faults").

Format: four u32, little-endian: flags (1: access point gone, 2: DNS failing), drops (how many
times the access point went away: sockets opened before the last drop are aborted), connect_ms
(each TCP connect takes this long), dhcp_ms (association and DHCP lease once the access point is
there)."""

import struct
from pathlib import Path

from upcert.errors import UpcertError
from upcert.validate import open_private

NETWORK = "network.bin"
AP_GONE, DNS_DOWN = 1, 2
_FMT = "<IIII"
_MAX_MS = 600_000


def read(state_dir):
    """{"wifi": up?, "dns": working?, "drops", "connect_ms", "dhcp_ms"} of the board in
    state_dir (a network without faults when the file is missing)."""
    try:
        data = (Path(state_dir) / NETWORK).read_bytes()
    except FileNotFoundError:
        data = b""
    flags, drops, connect_ms, dhcp_ms = (struct.unpack(_FMT, data[:16]) if len(data) >= 16
                                         else (0, 0, 0, 0))
    return {"wifi": not flags & AP_GONE, "dns": not flags & DNS_DOWN, "drops": drops,
            "connect_ms": connect_ms, "dhcp_ms": dhcp_ms}


def reset(state_dir):
    """No faults: done when the board process starts."""
    _write(state_dir, 0, 0, 0, 0)


def change(state_dir, *, wifi=None, dns=None, connect_ms=None, dhcp_ms=None):
    """Change the faults of the board in state_dir (None: unchanged); returns read()'s dict.
    wifi False takes the access point away (a drop: the board's sockets are aborted), True
    brings it back (the station gets its lease dhcp_ms later); dns False makes every lookup fail;
    connect_ms makes each TCP connect that slow (beyond the socket's timeout it times out)."""
    for name, ms in (("connect_ms", connect_ms), ("dhcp_ms", dhcp_ms)):
        if ms is not None and (not isinstance(ms, int) or not 0 <= ms <= _MAX_MS):
            raise UpcertError(f"{name} {ms!r}: give whole milliseconds 0..{_MAX_MS}")
    cur = read(state_dir)
    flags = (0 if cur["wifi"] else AP_GONE) | (0 if cur["dns"] else DNS_DOWN)
    drops = cur["drops"]
    if wifi is not None:
        if not wifi and cur["wifi"]:
            drops += 1
        flags = flags & ~AP_GONE | (0 if wifi else AP_GONE)
    if dns is not None:
        flags = flags & ~DNS_DOWN | (0 if dns else DNS_DOWN)
    _write(state_dir, flags, drops, cur["connect_ms"] if connect_ms is None else connect_ms,
           cur["dhcp_ms"] if dhcp_ms is None else dhcp_ms)
    return read(state_dir)


def _write(state_dir, *values):
    # In place, one write of 16 bytes: the board keeps the file open from its power-on.
    with open_private(Path(state_dir) / NETWORK, "r+b") as f:
        f.write(struct.pack(_FMT, *values))
