"""A silence the sweep folded reaches the anomaly workflow as one incident and no work."""

from __future__ import annotations

from typing import Any

import fakeredis
import numpy as np
import pytest
from runtime_doubles import MakeRuntime, RecordingApp

from alerts.stream_sink import MemorySink
from scheduler.dropout_fold import REGION_WIDE, SilenceEvent
from scheduler.registry import generate_registry
from scheduler.wire import ACCELERATE_TASK
from tasks.anomaly import handle_alerts, handle_tick
from tasks.dropout import dropout_alerts, silence_entries

NOW = 1_700_000_000.0


def folded_payload(devices: int, group: int) -> dict[str, Any]:
    """A sweep's payload: one lone device alerted, ``devices`` folded into one event."""
    ids = np.arange(100, 100 + devices + 1, dtype=np.uint64)
    last_ts = NOW - 60 + 0.001 * np.arange(ids.size)
    events = silence_entries(ids, last_ts, [SilenceEvent(group, np.arange(1, ids.size))])
    return dropout_alerts("eu-west", ids[:1], last_ts[:1], NOW, events)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_folded_group_silence_is_one_incident_with_its_count_and_books_no_work(
    kind: str, make_runtime: MakeRuntime, recording_app: RecordingApp
) -> None:
    client = fakeredis.FakeRedis() if kind == "redis" else None
    rt = make_runtime(client)
    rt.stores.state.save_registry(generate_registry(3_000, seed=0))
    sink = MemorySink()
    rt.sinks = [sink]
    # Given a sweep that folded 2,000 silent devices of group 7 into one event and
    # alerted one lone device of another group
    payload = folded_payload(2_000, group=7)
    # When the anomaly task folds it, twice (a redelivery), and its timers run past the
    # wait a silence of part of a region gets before its first notice
    handle_alerts(rt, payload, NOW)
    handle_alerts(rt, payload, NOW + 0.1)
    handle_tick(rt, {"region": "eu-west"}, NOW + rt.correlator.silence_wait_s + 1.0)
    # Then one ingest gap of group 7 fired with all 2,000 devices, the lone device's
    # incident apart, and no accelerated processing was booked for either
    fired = sorted(
        (d["storm"] or "", d["group"], d["device_count"])
        for d in sink.documents
        if d["status"] == "firing"
    )
    assert fired == [("", "0", 1), ("ingest_gap", "7", 2_000)]
    assert recording_app.named(ACCELERATE_TASK) == []


def test_a_region_silence_with_no_device_alert_still_opens_its_incident(
    make_runtime: MakeRuntime, recording_app: RecordingApp
) -> None:
    rt = make_runtime()
    rt.stores.state.save_registry(generate_registry(3_000, seed=0))
    sink = MemorySink()
    rt.sinks = [sink]
    # Given a sweep payload holding no device alert, only a region-wide event of 500
    ids = np.arange(1, 501, dtype=np.uint64)
    events = silence_entries(
        ids, np.full(ids.size, NOW - 30), [SilenceEvent(REGION_WIDE, np.arange(ids.size))]
    )
    # When it is folded and the group wait passes
    handle_alerts(rt, dropout_alerts("eu-west", ids[:0], np.zeros(0), NOW, events), NOW)
    handle_tick(rt, {"region": "eu-west"}, NOW + 1.0)
    # Then the region's ingest gap fires with the 500 devices
    assert [(d["storm"], d["group"], d["device_count"]) for d in sink.documents] == [
        ("ingest_gap", "*", 500)
    ]
    assert recording_app.named(ACCELERATE_TASK) == []
