"""The anomaly workflow books accelerated processing when an incident opens or grows."""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import numpy as np
import pytest

from alerts.stream_sink import MemorySink
from scheduler.correlation import CorrelatorConfig
from scheduler.registry import generate_registry
from stores.detector_store import MemoryDetectorStore
from stores.incident_store import MemoryIncidentStore, RedisIncidentStore
from stores.keys import Keys
from stores.memory_state import MemoryStateStore
from tasks.anomaly import AnomalyRuntime, handle_alerts, handle_tick

NOW = 1_700_000_000.0
INTERVAL_S = 0.2


def alerts(batch_id: str, device_ids: list[int]) -> dict[str, Any]:
    dev = np.asarray(device_ids, dtype="<u8")
    return {
        "v": 1,
        "batch_id": batch_id,
        "region": "eu-west",
        "n": int(dev.size),
        "device_id": dev.tobytes(),
        "ts": np.full(dev.size, NOW, dtype="<f8").tobytes(),
        "kind": np.full(dev.size, 1, dtype="i1").tobytes(),
        "emitted_ts": NOW,
    }


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_opening_and_growth_book_acceleration_at_most_once_per_interval(kind: str) -> None:
    registry = generate_registry(3_000, seed=0)
    booked: list[tuple[str, str, list[int]]] = []
    rt = AnomalyRuntime(
        incidents=MemoryIncidentStore()
        if kind == "memory"
        else RedisIncidentStore(fakeredis.FakeRedis(), Keys("t")),
        sinks=[MemorySink()],
        registry=lambda: registry,
        config=CorrelatorConfig(),
        detector=MemoryDetectorStore(),
        state=MemoryStateStore(),
        schedule_tick=lambda region, countdown_s: None,
        accelerate=lambda region, inc, devs: booked.append((region, inc, sorted(devs.tolist()))),
        accelerate_interval_s=INTERVAL_S,
    )
    # Given devices 1 and 2 of group 0 alert: an incident opens
    handle_alerts(alerts("a", [1, 2]), rt, NOW)
    # When it grows at once, and timers run without growth
    handle_alerts(alerts("b", [3]), rt, NOW + 0.01)
    handle_tick({"region": "eu-west"}, rt, NOW + 0.6)
    # Then acceleration was booked once, for the devices of the opening
    assert [(r, devs) for r, _, devs in booked] == [("eu-west", [1, 2])]
    # When it grows again after the interval (and a redelivered batch adds nothing)
    time.sleep(INTERVAL_S + 0.05)
    handle_alerts(alerts("b", [3]), rt, NOW + 0.7)
    handle_alerts(alerts("c", [4]), rt, NOW + 0.8)
    # Then a second booking carries every device of the incident, under the same id
    assert len(booked) == 2
    assert booked[1][2] == [1, 2, 3, 4] and booked[1][1] == booked[0][1]


def test_no_booking_without_a_broker_to_scan() -> None:
    registry = generate_registry(3_000, seed=0)
    rt = AnomalyRuntime(
        incidents=MemoryIncidentStore(),
        sinks=[MemorySink()],
        registry=lambda: registry,
        config=CorrelatorConfig(),
        detector=MemoryDetectorStore(),
        state=MemoryStateStore(),
        schedule_tick=lambda region, countdown_s: None,
    )
    # Given the embedded runtime (no accelerate hook); When an incident opens
    # Then the alert is still folded and nothing fails
    assert handle_alerts(alerts("a", [1, 2]), rt, NOW) == 0
    assert rt.incidents.load("eu-west") is not None
