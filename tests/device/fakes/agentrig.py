# An agent with rotation on, wired to FakeAws (real certificates from testca, real P-256 keys)
# and the in-memory A/B slot store: the rig of the agent-level rotation tests.
import json

from agentfakes import DAY, NOW, FakeClock, config
from fakeaws import FakeAws
from slotstore import RecordedFsStore
from testca import TestCa, key
from upcert import config as config_mod
from upcert.agent import Agent
from upcert.rotation import Rotation


def rig(interval_s=0, **over):
    """(agent, aws, store, lines): a device whose certificate is not due (3000 days left), the
    agent's sleeps recorded in agent.sleeps (not slept); interval_s 0: one report per cycle."""
    clock = FakeClock()
    ca = TestCa()
    aws = FakeAws(ca, clock, validity_s=4000 * DAY)
    k = key("old-device")
    old = ca.issue("dev1", k.public_point(), NOW - 10 * DAY, NOW + 3000 * DAY)
    calls = []
    store = RecordedFsStore(old, k.private_der(), calls)
    lines = []
    cfg = config_mod.validate(config(**over))
    cfg["telemetry_interval_s"] = interval_s
    rot = Rotation(cfg, store, clock, aws.connector(calls), lines.append, lambda: [ca.cert()])
    a = Agent(cfg, store, clock, aws.socket, lines.append, rot)
    a.sleeps = []
    a.sleep_ms = a.sleeps.append
    return a, aws, store, lines


def telemetry(aws):
    """The telemetry messages the device published, as dicts, in order."""
    return [json.loads(p) for t, p in aws.published("things/dev1/telemetry")]
