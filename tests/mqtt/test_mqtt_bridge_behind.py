"""Given a bridge with more gateway messages waiting than one cycle takes (behind its
broker), their non-premium readings are parked unoffered, in one write per cycle, so
premium ones reach ingest first; once it has caught up, the parked readings are offered,
each once. No broker is needed: messages are handed to the bridge as its network thread
would."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from mqtt_publishing import Recorder

from ingest.mqtt_bridge import CYCLE_BYTES, MqttBridge
from ingest.mqtt_client import BrokerConfig, Received
from ingest.producer import Producer
from scheduler.registry import generate_registry
from stores.memory_state import MemoryStateStore
from stores.parked_readings import MemoryParkedReadings, ParkedBatch

REG = generate_registry(20_000, seed=5)


class CountedParking(MemoryParkedReadings):
    """Counts the writes that park readings."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def park(self, batches: Sequence[ParkedBatch]) -> None:
        self.writes += 1
        super().park(batches)


def gateway_message(device_ids: list[int], mid: int) -> Received:
    now = time.time()
    body = json.dumps([{"device_id": d, "ts": now, "value": 1.0} for d in device_ids]).encode()
    return (b"t/gateways/gw1/telemetry", body, mid, 1, None)


def test_a_bridge_behind_parks_gateways_standard_readings_and_offers_them_once_caught_up() -> None:
    # Given a bridge whose inbox holds more than one cycle of single readings
    pub = Recorder()
    producer = Producer(lambda: REG, pub, MemoryStateStore())
    parked = CountedParking()
    bridge = MqttBridge(producer, BrokerConfig("127.0.0.1", 1), registry=lambda: REG, parked=parked)
    devices = [int(d) for d in REG.device_id[:15_000]]
    premium = {int(d) for d in REG.device_id[REG.tier == 0]}
    messages = [gateway_message(devices[i : i + 100], i // 100 + 1) for i in range(0, 15_000, 100)]
    assert sum(len(m[1]) for m in messages) > 1.5 * CYCLE_BYTES
    bridge.receiver.plain(messages)
    # When it runs one cycle
    bridge.step()
    producer.flush()
    # Then premium readings of that cycle were offered and published; no standard one was
    # offered, they are parked
    first = pub.device_ids()
    assert first and set(first) <= premium
    assert bridge.parking is not None and bridge.parking.parked > 0
    # in one write, though the cycle was offered in several runs
    assert parked.writes == 1
    # And once it has caught up, every reading is published exactly once
    deadline = time.monotonic() + 30
    while len(pub.device_ids()) < len(devices) and time.monotonic() < deadline:
        bridge.step()
        producer.flush()
        time.sleep(0.01)
    assert sorted(pub.device_ids()) == sorted(devices)
    assert sum(parked.waiting(REG.topology.regions).values()) == 0
