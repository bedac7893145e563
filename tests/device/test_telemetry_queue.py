# Device tests for the agent's telemetry queue (at least once, bounded, in order) and its
# handling of a link that is down (board.network_up(config, 0) raising), on fake brokers.
import json
from time import ticks_add

from agentfakes import FakeClock, FakeStore, config
from checks import eq, raises, true
from fakesock import FakeBroker
from upcert.agent import Agent
from upcert.config import validate
from upcert.errors import ConfigError, ConnectError


def _seqs(broker):
    return [json.loads(p)["seq"] for t, p in broker.published if t == b"things/dev1/telemetry"]


def _agent(connect, net=None, **over):
    lines = []
    a = Agent(config(**over), FakeStore(), FakeClock(), connect, lines.append, net=net)
    slept = []

    def sleep(ms):  # time passes for the agent's report schedule, not for the test
        slept.append(ms)
        a._due = ticks_add(a._due, -ms)

    a.sleep_ms = sleep
    return a, lines, slept


class _Net:
    """The board's link: connect() goes to the current broker, or fails while it is down."""

    def __init__(self):
        self.broker = FakeBroker()
        self.up = True

    def connect(self, host, port):
        if not self.broker:
            raise ConnectError("connection refused by %s:%s: broker down" % (host, port))
        return self.broker.socket()


def _online(a, interval_s):
    # Connected cycles serve the link for the report interval on the real clock: 0 here.
    a.config["telemetry_interval_s"] = interval_s


def test_offline_reports_are_queued_bounded_and_sent_in_order():
    net = _Net()
    a, lines, _ = _agent(net.connect, queue=3, telemetry_interval_s=0)
    first = net.broker
    a.cycle()  # connect, seq 1 acknowledged
    eq(_seqs(first), [1], "first report")
    first.sock.eof()
    first.sock.reply = None  # the broker is gone: seq 2 gets no PUBACK
    net.broker = None
    a.cycle()  # link lost (seq 2 stays queued)
    true(not a.connected, "link lost")
    _online(a, 1)  # offline: a report each second of the backoff waits
    for _ in range(6):  # failed connects; their backoff waits queue what falls due
        a.cycle()
    made = a.seq
    true(made >= 7, "reports made while offline: %d" % made)
    eq(len(a.queue), 3, "the queue holds config 'queue' messages")
    eq(a.dropped, made - 1 - 3, "every message beyond the queue counted as dropped")
    net.broker = FakeBroker()
    _online(a, 0)
    a.cycle()  # reconnect: the queue, oldest first, then a fresh report
    got = _seqs(net.broker)
    # the new report made room by dropping the oldest: a full queue is sent, in order
    eq(got, list(range(made - 1, made + 2)), "the newest 3, in order")
    last = json.loads(net.broker.published[-1][1])
    eq(last["dropped"], made - 3, "telemetry reports the drops")
    eq(a.queue, [], "all acknowledged")
    true("upcert: published telemetry seq=%d" % (made + 1) in lines, "log line per PUBACK")


def test_a_publish_without_puback_is_sent_again():
    net = _Net()
    net.broker = FakeBroker(ack=False)
    a, lines, _ = _agent(net.connect, telemetry_interval_s=0)
    a.mqtt.timeout_s = 0  # the PUBACK wait ends at once
    a.cycle()
    eq(_seqs(net.broker), [1], "seq 1 reached a broker that never acknowledged it")
    true(not a.connected and a.queue[0][0] == 1, "still queued")
    net.broker = FakeBroker()
    a.cycle()
    eq(_seqs(net.broker)[:2], [1, 2], "seq 1 again (at least once), then seq 2")
    eq(a.dropped, 0, "nothing dropped")


def test_link_down_no_connect_and_wait_ends_when_back():
    tries = []
    state = {"down": 0}

    def link():
        if state["down"]:
            state["down"] -= 1
            raise ConnectError("wifi 'lab': not connected after 0 ms (STAT_NO_AP_FOUND)")

    def connect(host, port):
        tries.append(host)
        return FakeBroker().socket()

    a, lines, slept = _agent(connect, net=link, telemetry_interval_s=0)
    a._backoff_s = 16  # a long outage already: the next wait would be 32 s
    state["down"] = 4  # the connect's check, the wait's first look, then two polls
    a.cycle()
    eq(tries, [], "no connection attempt while the link is down")
    true(lines[0].startswith("upcert: connection failed: wifi 'lab': not connected"), lines[0])
    eq(slept, [1000, 1000, 1000], "polled each second, the wait ended when the link came back")
    a.cycle()
    eq(len(tries), 1, "connected right after")


def test_queue_setting_validated():
    c = validate({"thing": "d", "endpoint": "h"})
    eq(c["queue"], 8, "default")
    for bad in (0, 65, "8", 2.5):
        raises(ConfigError, validate, {"thing": "d", "endpoint": "h", "queue": bad},
               contains="'queue' must be an integer 1..64")
