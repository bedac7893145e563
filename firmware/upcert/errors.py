# upcert device exceptions: one small hierarchy, each carrying a reason a person can act on.


class UpcertError(Exception):
    """Base of every error the device package raises on purpose."""


class ConfigError(UpcertError):
    """/upcert.d/config.json is missing, not JSON, or lacks a required field."""


class StoreError(UpcertError):
    """A credential store is missing data or holds data that does not parse."""


class CertificateError(UpcertError):
    """A certificate (DER/PEM) is malformed or unusable."""


class ClockNotSetError(UpcertError):
    """The clock is not trusted yet (unset RTC, no NTP), so validity cannot be judged."""


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
