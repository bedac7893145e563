# Scripted I2C bus for the ATECC608 driver tests: records every write, answers reads from a
# queue of responses, NACKs like the ESP32 port (OSError(19), ENODEV).
from upcert.atecc_cmd import crc16

WAKE = b"\x04\x11\x33\x43"  # the chip's reply after a wake pulse
NACK = None  # queue item: NACK one read
HANG = "hang"  # queue item: NACK every read until the driver writes idle (0x02) or sleep (0x01)


def packet(data):
    """A response packet: count | data | CRC-16 (little-endian)."""
    body = bytes((len(data) + 3,)) + bytes(data)
    crc = crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def status(code):
    """A 4-byte status packet."""
    return packet(bytes((code,)))


def corrupt(pkt):
    """The packet with its last CRC byte flipped."""
    return pkt[:-1] + bytes((pkt[-1] ^ 0xFF,))


class FakeI2C:
    """machine.I2C stand-in: writeto(addr, buf) and readfrom_into(addr, buf).

    writes: every write as (addr, bytes), NACKed or not. reads: (addr, length) of each read.
    queue: what reads return, in order: bytes (copied, the rest of the buffer filled with
    0xFF), NACK, or HANG; an empty queue NACKs. Writes to address 0 (the wake pulse) are always
    NACKed; nack_writes NACKs that many writes to the chip."""

    def __init__(self, queue=(), addr=0x60):
        self.addr = addr
        self.queue = list(queue)
        self.writes = []
        self.reads = []
        self.nack_writes = 0

    def writeto(self, addr, buf, stop=True):
        data = bytes(buf)
        self.writes.append((addr, data))
        if addr != self.addr:
            raise OSError(19)
        if self.nack_writes:
            self.nack_writes -= 1
            raise OSError(19)
        if data in (b"\x01", b"\x02") and self.queue and self.queue[0] is HANG:
            self.queue.pop(0)
        return len(data)

    def readfrom_into(self, addr, buf, stop=True):
        self.reads.append((addr, len(buf)))
        if addr != self.addr or not self.queue or self.queue[0] is HANG:
            raise OSError(19)
        item = self.queue.pop(0)
        if item is NACK:
            raise OSError(19)
        for i in range(len(buf)):
            buf[i] = item[i] if i < len(item) else 0xFF

    def commands(self):
        """The command frames written to the chip (word address 0x03 first), in order."""
        return [d for a, d in self.writes if a == self.addr and d[:1] == b"\x03"]

    def pulses(self):
        """How many wake pulses (writes to address 0) were sent."""
        return len([1 for a, _ in self.writes if a == 0])


class Broken:
    """A bus that fails the test on any use (to prove the constructor does no I/O)."""

    def writeto(self, *args):
        raise AssertionError("I/O in the constructor")

    readfrom_into = writeto
