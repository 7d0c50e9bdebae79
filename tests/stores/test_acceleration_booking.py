"""The anomaly workflow books accelerated processing when an incident opens or grows."""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import numpy as np
import pytest
from runtime_doubles import MakeRuntime, RecordingApp

from alerts.stream_sink import MemorySink
from runtime.runtime import Runtime
from scheduler.registry import generate_registry
from scheduler.wire import ACCELERATE_TASK
from tasks.anomaly import handle_alerts, handle_tick

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


def _booked(app: RecordingApp) -> list[tuple[str, str, list[int]]]:
    """(region, incident id, devices) of every accelerated pass booked."""
    return [
        (
            args[0]["region"],
            args[0]["incident_id"],
            sorted(np.frombuffer(args[0]["device_id"], dtype="<u8").tolist()),
        )
        for args in app.named(ACCELERATE_TASK)
    ]


def _alerting_runtime(kind: str, make_runtime: MakeRuntime) -> Runtime:
    """A runtime (fakeredis or memory) with a 3,000-device registry and a memory sink."""
    client = fakeredis.FakeRedis() if kind == "redis" else None
    rt = make_runtime(client, accelerate_min_interval_s=INTERVAL_S)
    rt.stores.state.save_registry(generate_registry(3_000, seed=0))
    rt.sinks = [MemorySink()]
    return rt


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_opening_and_growth_book_acceleration_at_most_once_per_interval(
    kind: str, make_runtime: MakeRuntime, recording_app: RecordingApp
) -> None:
    rt = _alerting_runtime(kind, make_runtime)
    # Given devices 1 and 2 of group 0 alert: an incident opens
    handle_alerts(rt, alerts("a", [1, 2]), NOW)
    # When it grows at once, and timers run without growth
    handle_alerts(rt, alerts("b", [3]), NOW + 0.01)
    handle_tick(rt, {"region": "eu-west"}, NOW + 0.6)
    # Then acceleration was booked once, for the devices of the opening
    booked = _booked(recording_app)
    assert [(r, devs) for r, _, devs in booked] == [("eu-west", [1, 2])]
    # When it grows again after the interval (and a redelivered batch adds nothing)
    time.sleep(INTERVAL_S + 0.05)
    handle_alerts(rt, alerts("b", [3]), NOW + 0.7)
    handle_alerts(rt, alerts("c", [4]), NOW + 0.8)
    # Then a second booking carries every device of the incident, under the same id
    booked = _booked(recording_app)
    assert len(booked) == 2
    assert booked[1][2] == [1, 2, 3, 4] and booked[1][1] == booked[0][1]


def test_the_in_memory_runtime_books_acceleration_too(
    make_runtime: MakeRuntime, recording_app: RecordingApp
) -> None:
    # Given the embedded (in-memory) runtime, which reads its own in-process broker
    rt = make_runtime()
    rt.stores.state.save_registry(generate_registry(3_000, seed=0))
    rt.sinks = [MemorySink()]
    # When an incident opens
    assert handle_alerts(rt, alerts("a", [1, 2]), NOW) == 0
    # Then the alert is folded and its devices' pending data is booked for acceleration
    assert rt.stores.incidents.load("eu-west") is not None
    assert [devs for _, _, devs in _booked(recording_app)] == [[1, 2]]


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_no_acceleration_is_booked_while_the_regions_budget_is_spent(
    kind: str, make_runtime: MakeRuntime, recording_app: RecordingApp
) -> None:
    rt = _alerting_runtime(kind, make_runtime)
    # Given eu-west's budget of work above premium spent (a minute of slot time charged)
    rt.stores.work_budget.charge("eu-west", rt.clock(), 60.0)
    # When an incident opens there
    handle_alerts(rt, alerts("a", [1, 2]), NOW)
    # Then it is folded, nothing is booked, and the skip is counted
    assert rt.stores.incidents.load("eu-west") is not None
    assert _booked(recording_app) == []
    assert rt.stores.state.counters()["accelerate_skipped_budget"] == 1
    # When the debt is paid (an hour on) and the incident grows
    later_ts = rt.clock() + 3_600.0
    rt.clock = lambda: later_ts
    handle_alerts(rt, alerts("b", [3]), NOW + 0.01)
    # Then its devices are booked, the ones it opened with included
    assert [devs for _, _, devs in _booked(recording_app)] == [[1, 2, 3]]
