"""Given the bridge's run budget: a cycle's messages come out in order, each once, in runs
whose size follows the measured cost of offering them, counted in readings (a gateway
message weighs as its readings do), so a run lasts about the budget."""

from __future__ import annotations

import json
import time

import numpy as np
from mqtt_publishing import Recorder
from test_mqtt_premium_lane import REG, STANDARD, OfferLog

from ingest.mqtt_bridge import MqttBridge
from ingest.mqtt_client import BrokerConfig, Received
from ingest.mqtt_runs import MIN_RUN_UNITS, RunBudget


def single(i: int) -> Received:
    payload = b'{"device_id":%d,"ts":%f,"value":1.0}' % (i, time.time())
    return (b"t/devices/%d/telemetry" % i, payload, i % 65_535 + 1, 1, None)


def gateway(i: int, readings: int = 100) -> Received:
    rows = [{"device_id": i * 1000 + j, "ts": 1.0, "value": 1.0} for j in range(readings)]
    return (b"t/gateways/g/telemetry", json.dumps(rows).encode(), i % 65_535 + 1, 1, None)


def test_every_message_comes_out_once_in_order() -> None:
    budget = RunBudget()
    messages = [single(i) for i in range(3_000)] + [gateway(i) for i in range(300)]
    out = []
    for run in budget.runs(messages):
        out.extend(run)
        budget.spent(0.01, run)
    assert out == messages


def test_runs_shorten_when_offering_costs_more_and_lengthen_again_when_it_costs_less() -> None:
    # Given a budget whose runs were measured at 1 ms per reading (a starved bridge)
    budget = RunBudget(budget_s=0.02)
    messages = [single(i) for i in range(20_000)]
    for _ in range(20):
        budget.spent(0.001 * 100, messages[:100])
    # Then its runs are as short as it goes
    slow = next(budget.runs(messages))
    assert len(slow) == MIN_RUN_UNITS
    # And once runs cost 2 µs a reading again, runs grow back to fill the budget
    for _ in range(40):
        budget.spent(2e-6 * 1_000, messages[:1_000])
    fast = next(budget.runs(messages))
    assert 5_000 <= len(fast) <= 10_000


def test_a_gateway_message_counts_as_its_readings() -> None:
    # Given one budget, and runs of single readings and of gateway batches of 100
    budget = RunBudget()
    singles = next(budget.runs([single(i) for i in range(20_000)]))
    gateways = next(budget.runs([gateway(i) for i in range(200)]))
    # Then a run carries about as many readings either way: a fiftieth or less of the
    # messages when each carries a hundred readings
    assert len(gateways) * 50 <= len(singles)


class SlowOffers(OfferLog):
    """Takes 0.2 ms per reading offered, as a bridge starved of CPU does."""

    def ingest_columns(self, device_id, *args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.0002 * len(np.asarray(device_id)))
        return super().ingest_columns(device_id, *args, **kwargs)


def test_a_slow_bridge_offers_in_shorter_runs_so_premium_lane_messages_wait_less() -> None:
    # Given a bridge whose offers cost 0.2 ms per reading, after one cycle of 500 readings
    pub = Recorder()
    producer = SlowOffers(pub)
    bridge = MqttBridge(producer, BrokerConfig("127.0.0.1", 1), registry=lambda: REG)
    first, second = STANDARD[:500], STANDARD[500:5_500]
    bridge.receiver.plain([single(d) for d in first])
    bridge.step()
    # When a cycle of 5,000 more is taken
    producer.offers.clear()
    bridge.receiver.plain([single(d) for d in second])
    bridge.step()
    producer.flush()
    # Then it was offered in several runs (the premium lane is looked at between them),
    # none of them as long as the cycle, and every reading was published once
    assert len(producer.offers) >= 4
    assert max(len(o) for o in producer.offers) <= MIN_RUN_UNITS
    assert sorted(pub.device_ids()) == sorted(first + second)
