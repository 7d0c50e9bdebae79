"""Given a bridge whose cycle is offered in runs that each take longer than premium's age
limit (a starved bridge): premium readings of a run are published when the run ends,
before the next run is offered, not when the next run's ingest next checks their age."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mqtt_publishing import Recorder

import ingest.mqtt_bridge as mqtt_bridge
import ingest.mqtt_intake as mqtt_intake
from ingest.mqtt_client import BrokerConfig, Received
from ingest.mqtt_intake import Intake
from ingest.mqtt_options import SLOW_RUN_MS, BridgeOptions
from ingest.producer import Producer
from scheduler.model import Batch
from scheduler.registry import generate_registry
from stores.memory_state import MemoryStateStore

REG = generate_registry(2_000, seed=5)
PREMIUM = [int(d) for d in REG.device_id[REG.tier == 0][:10]]
STANDARD = [int(d) for d in REG.device_id[REG.tier > 0][:30]]
#: What one run takes on the bridge's clock: longer than premium's 25 ms age limit.
RUN_S = 0.03
RUN_MESSAGES = 20


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class TimedRecorder(Recorder):
    """Keeps the clock each batch was published at."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.published_at: dict[int, float] = {}

    def publish(self, batch: Batch) -> None:
        super().publish(batch)
        self.published_at.update(dict.fromkeys(batch.device_id.tolist(), self.clock()))


def messages(device_ids: list[int], clock: Clock) -> list[Received]:
    return [
        (
            b"t/devices/%d/telemetry" % d,
            json.dumps({"device_id": d, "ts": clock(), "value": 1.0}).encode(),
            i + 1,
            1,
            None,
        )
        for i, d in enumerate(device_ids)
    ]


def test_premium_readings_of_a_slow_run_go_out_before_the_next_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a bridge offering its cycle in runs of 20 messages, each taking 30 ms
    assert RUN_S * 1000.0 >= SLOW_RUN_MS
    clock = Clock()
    pub = TimedRecorder(clock)
    producer = Producer(lambda: REG, pub, MemoryStateStore(), clock=clock)
    bridge = mqtt_bridge.MqttBridge(
        producer,
        BrokerConfig("127.0.0.1", 1),
        BridgeOptions(premium_lane=False),
        clock=clock,
        registry=lambda: REG,
    )
    monkeypatch.setattr(mqtt_bridge, "RUN_MESSAGES", RUN_MESSAGES)
    decode, offer = mqtt_intake.decode_messages, Intake.offer

    def slow_decode(*args: Any) -> Any:  # half of a run decodes its messages
        clock.now += RUN_S / 2
        return decode(*args)

    def slow_offer(self: Intake, received: list[Received], behind: bool = False) -> None:
        offer(self, received, behind)
        clock.now += RUN_S / 2  # the other half ingests them

    monkeypatch.setattr(mqtt_intake, "decode_messages", slow_decode)
    monkeypatch.setattr(Intake, "offer", slow_offer)
    # And premium single readings waiting ahead of two runs' worth of standard ones
    started = clock()
    bridge.receiver.plain(messages(PREMIUM + STANDARD, clock))
    # When the bridge runs one cycle
    bridge.step()
    # Then every reading was published, and premium's at the end of the first run (which
    # took them first), not once the second had decoded its messages
    assert sorted(pub.device_ids()) == sorted(PREMIUM + STANDARD)
    assert {pub.published_at[d] for d in PREMIUM} == {started + RUN_S}
