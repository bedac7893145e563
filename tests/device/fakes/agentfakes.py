# Stand-ins for the agent's collaborators that the unix port cannot provide for real: a clock
# whose time and trust the test sets, a store holding a public test certificate, a config dict.
from certdata import EC_DER
from upcert.clock import iso
from upcert.errors import ClockNotSetError
from upcert.store import Store

DAY = 86400
NOW = 1800000000  # 2027-01-15T08:00:00Z on the unix port's 1970 epoch
CERT_NOT_BEFORE = 1767225600  # certdata.EC_DER: 2026-01-01T00:00:00Z
CERT_NOT_AFTER = 2524607999  # 2049-12-31T23:59:59Z
CERT_ID = "954ae69b4763ca7ad96eb0071f6bf62e9ce6d6fed27b3780127c9d704aaf85eb"


class FakeClock:
    """upcert.clock.Clock interface with settable time and trust (sync_ok: sync() succeeds)."""

    def __init__(self, now=NOW, trusted=True, sync_ok=True):
        self.t = now
        self.ok = trusted
        self.sync_ok = sync_ok
        self.syncs = 0

    def now(self):
        return self.t

    def trusted(self):
        return self.ok

    def require_trusted(self):
        if not self.ok:
            raise ClockNotSetError("clock not set (reads 2000-01-01T00:00:05Z): sync NTP first")
        return self.t

    def sync(self):
        self.syncs += 1
        if not self.sync_ok:
            raise OSError(110)  # ntptime timing out
        self.ok = True
        return True

    def iso(self, t=None):
        return iso(self.t if t is None else t)


class FakeStore(Store):
    """A read-only identity in memory (certdata.EC_DER and placeholder key bytes) on the real
    upcert.store.Store base, which refuses stage/commit/rollback as for a read-only store."""

    kind = "fs"
    location = "memory"

    def __init__(self, cert=EC_DER, key=b"KEYDER-not-a-key"):
        self.cert = cert
        self.key = key

    def certificate(self):
        return self.cert

    def private_key(self):
        return self.key



def config(**over):
    """A validated-looking config dict (defaults of docs/ARCHITECTURE.md) with overrides."""
    c = {
        "thing": "dev1",
        "client_id": "dev1",
        "endpoint": "localhost",
        "port": 8883,
        "store": {"kind": "fs"},
        "topics": {
            "telemetry": "things/dev1/telemetry",
            "commands": "things/dev1/commands",
            "replies": "things/dev1/replies",
        },
        "telemetry_interval_s": 1,
        "keepalive_s": 60,
    }
    c.update(over)
    return c
