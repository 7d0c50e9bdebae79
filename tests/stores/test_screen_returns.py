"""A fleet back from a short shared pause (no sweep saw it) is one silence event from
screening, counted, and one incident downstream; not one dropout alert per device."""

from __future__ import annotations

from typing import Any

import fakeredis
import numpy as np
import pytest
from runtime_doubles import MakeRuntime, RecordingApp

from alerts.stream_sink import MemorySink
from scheduler import alert_record
from scheduler.anomaly_kind import DROPOUT
from scheduler.codec import encode_batch
from scheduler.model import Batch
from scheduler.registry import generate_registry
from scheduler.wire import ACCELERATE_TASK, ANOMALY_TASK
from tasks.anomaly import handle_alerts, handle_tick
from tasks.screen import handle_screen

NOW = 1_700_000_000.0
INTERVAL_S = 0.3


def batch_at(batch_id: str, ids: np.ndarray, ts: np.ndarray, seed: int) -> Batch:
    values = 20.0 + np.random.default_rng(seed).normal(0, 0.5, ids.size)
    return Batch(
        batch_id=batch_id,
        region="eu-west",
        tier="standard",
        metrics=("value",),
        device_id=ids,
        ts=ts,
        values=values.reshape(-1, 1),
        ingest_ts=ts,
    )


def sent_alerts(recording_app: RecordingApp) -> list[dict[str, Any]]:
    return [args[0] for args in recording_app.named(ANOMALY_TASK)]


@pytest.fixture(autouse=True)
def alerts_sent_not_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Screening hands its alerts to the anomaly queue (as a fold failing where screened
    does) instead of folding them there: these tests read the payload it hands on."""
    monkeypatch.setattr("tasks.screen.fold_alerts_here", lambda *args: False)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_fleet_back_from_a_short_pause_is_one_silence_event_and_one_incident(
    kind: str, make_runtime: MakeRuntime, recording_app: RecordingApp
) -> None:
    client = fakeredis.FakeRedis() if kind == "redis" else None
    rt = make_runtime(client)
    registry = generate_registry(600, seed=0)
    rt.stores.state.save_registry(registry)
    sink = MemorySink()
    rt.sinks = [sink]
    ids = registry.device_id
    jitter = np.random.default_rng(1).uniform(0, 0.05, ids.size)
    # Given 600 devices screened while reporting every 0.3 s (their dropout limit 1.5 s)
    for r in range(12):
        handle_screen(rt, encode_batch(batch_at(f"w{r}", ids, NOW + r * INTERVAL_S + jitter, r)))
    before = len(sent_alerts(recording_app))
    # When all of them come back after a 2.5 s pause (shorter than any sweep period)
    back_ts = NOW + 11 * INTERVAL_S + 2.5 + jitter
    handle_screen(rt, encode_batch(batch_at("back", ids, back_ts, 99)))
    # Then screening sent one payload holding one region-wide event of all 600 devices
    (payload,) = sent_alerts(recording_app)[before:]
    assert [(s["group"], s["devices"]) for s in payload["silences"]] == [("*", 600)]
    # and no device alert for any of their returns, in the payload or the alerts record
    kinds = np.frombuffer(payload["kind"], dtype="i1")
    assert DROPOUT not in kinds
    recorded = alert_record.decode(rt.stores.detector.recent_alerts())
    assert DROPOUT not in recorded["kind"]
    # and it counted the event and the devices it folded
    counters = rt.stores.state.counters()
    assert counters["screen_silence_events"] == 1
    assert counters["screen_folded_returns"] == 600
    # And the anomaly task makes it one incident of the region, a mass reconnect (seen on the
    # devices' return: no sweep saw the silence), with no work booked
    handle_alerts(rt, payload, NOW + 10)
    handle_tick(rt, {"region": "eu-west"}, NOW + 11)
    storms = [(d["storm"], d["group"], d["device_count"]) for d in sink.documents]
    assert storms == [("mass_reconnect", "*", 600)]
    assert recording_app.named(ACCELERATE_TASK) == []


def test_a_device_back_from_its_own_silence_is_still_a_dropout_alert(
    make_runtime: MakeRuntime, recording_app: RecordingApp
) -> None:
    rt = make_runtime()
    registry = generate_registry(600, seed=0)
    rt.stores.state.save_registry(registry)
    ids = registry.device_id
    lone = ids[17]
    jitter = np.random.default_rng(1).uniform(0, 0.05, ids.size)
    # Given 600 devices reporting every 0.3 s, of which one falls silent after 12 readings
    for r in range(22):
        keep = ids if r < 12 else ids[ids != lone]
        ts = NOW + r * INTERVAL_S + jitter[np.isin(ids, keep)]
        handle_screen(rt, encode_batch(batch_at(f"w{r}", keep, ts, r)))
    before = len(sent_alerts(recording_app))
    # When it comes back 3 s later, among its peers' readings
    ts = NOW + 22 * INTERVAL_S + jitter
    handle_screen(rt, encode_batch(batch_at("back", ids, ts, 99)))
    # Then it is alerted as a dropout on its own and nothing is folded
    payloads = sent_alerts(recording_app)[before:]
    dropouts = [
        int(d)
        for p in payloads
        for d, k in zip(
            np.frombuffer(p["device_id"], "<u8"), np.frombuffer(p["kind"], "i1"), strict=True
        )
        if k == DROPOUT
    ]
    assert dropouts == [int(lone)]
    assert not any(p.get("silences") for p in payloads)
    assert "screen_silence_events" not in rt.stores.state.counters()
