# upcert device exceptions: one small hierarchy. The message is for a person; .reason is a code
# that callers decide on (retry, roll back, give up), so no decision hangs on message text.

from micropython import const

# Reason codes (UpcertError.reason): small ints, not strings, as each distinct string loaded is
# one more interned qstr in RAM for good.
REFUSED = const(1)  # the broker refused our identity: TLS alert or close in the handshake,
#                      CONNACK 4/5, close right after CONNECT
CLOSED = const(2)  # a working link was closed by the peer
TIMEOUT = const(3)  # no answer in time (TCP, TLS, MQTT ack, AWS reply)
NETWORK = const(4)  # DNS, unreachable, TCP refused, other socket errors
SERVER = const(5)  # the server is not what we expect: certificate not trusted, not TLS/MQTT
MEMORY = const(6)  # out of RAM
CLOCK = const(7)  # the clock is not trusted yet
PROTOCOL = const(8)  # CONNACK 1-3, SUBACK 0x80, a reply that does not parse
REJECTED = const(9)  # AWS refused a request (Fleet Provisioning, Jobs)
CHECK = const(10)  # an issued certificate failed a device check
CONFIG = const(11)  # a person must change a setting or the stored credentials


class UpcertError(Exception):
    """Base of every error the device package raises on purpose: UpcertError(message,
    reason=None); .reason is one of the codes above (None: no decision depends on it)."""

    reason = None

    def __init__(self, message, reason=None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ConfigError(UpcertError):
    """/upcert.d/config.json is missing, not JSON, or lacks a required field."""


class StoreError(UpcertError):
    """A credential store is missing data or holds data that does not parse."""


class CertificateError(UpcertError):
    """A certificate (DER/PEM) is malformed or unusable."""


class ClockNotSetError(UpcertError):
    """The clock is not trusted yet (unset RTC, no NTP), so validity cannot be judged."""

    reason = CLOCK


class ConnectError(UpcertError):
    """A connection failed; the message names the likely cause (see diagnose.py)."""


class MqttError(UpcertError):
    """The broker refused us, or the MQTT link is dead."""


class RotationError(UpcertError):
    """A certificate rotation step failed: AWS rejected a request or did not answer, or the
    issued certificate failed a check; the message names the step and the cause."""


class AteccError(UpcertError):
    """The ATECC608 secure element refused a command, reported an error status, or did not
    answer; the message names the address, the command and the status. .status: the chip's
    status byte (int), or None when the chip did not answer or the driver refused."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status
