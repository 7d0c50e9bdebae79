"""Screening and anomaly task functions, called directly with in-memory and fakeredis stores."""

from __future__ import annotations

import dataclasses
from typing import Any

import fakeredis
import numpy as np
import pytest
import redis
from runtime_doubles import MakeRuntime, RecordingApp

from alerts.stream_sink import MemorySink
from runtime.runtime import Runtime
from scheduler.codec import encode_batch
from scheduler.injection import AnomalySpec, inject, normal_traffic
from scheduler.model import Batch
from scheduler.registry import Registry, generate_registry
from scheduler.wire import ANOMALY_TASK, INCIDENT_TICK_TASK, NOTIFY_TASK
from stores.detector_store import MemoryDetectorStore, RedisDetectorStore
from tasks.anomaly import handle_alerts, handle_notices, handle_tick
from tasks.screen import handle_screen, screen_batch

NOW = 1_700_000_000.0


def _batch(batch_id: str, device_id: Any, ts: Any, value: Any) -> Batch:
    dev = np.asarray(device_id, dtype=np.uint64)
    return Batch(
        batch_id=batch_id,
        region="eu-west",
        tier="premium",
        metrics=("value",),
        device_id=dev,
        ts=np.asarray(ts, dtype=np.float64),
        values=np.asarray(value, dtype=np.float64).reshape(-1, 1),
        ingest_ts=np.asarray(ts, dtype=np.float64),
    )


def _screen_all(store: Any, batches: list[Batch], clock: Any = None) -> list[dict[str, Any]]:
    emitted: list[dict[str, Any]] = []
    for b in batches:
        emit_ts = float(b.ts.max()) + 0.2
        screen_batch(b, store, emitted.append, clock=clock or (lambda t=emit_ts: t))
    return emitted


def _warm_then_spike(n_devices: int = 5, readings: int = 40) -> list[Batch]:
    rng = np.random.default_rng(1)
    batches = []
    for r in range(readings):
        ids = np.arange(1, n_devices + 1)
        values = 20.0 + rng.normal(0, 0.5, n_devices)
        if r == readings - 1:
            values[2] += 50.0  # device 3 spikes on its last reading
        batches.append(_batch(f"b{r}", ids, np.full(n_devices, NOW + r), values))
    return batches


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_spike_emits_one_alert_with_its_latency(kind: str) -> None:
    # Given warmed-up devices, one of which spikes
    store = MemoryDetectorStore() if kind == "memory" else RedisDetectorStore(fakeredis.FakeRedis())
    batches = _warm_then_spike()
    # When every batch is screened, each alert emitted 0.2 s after the batch's newest reading
    emitted = _screen_all(store, batches)
    # Then exactly one alert, for device 3, at the spike's event time, kind "spike"
    assert len(emitted) == 1
    payload = emitted[0]
    assert np.frombuffer(payload["device_id"], dtype="<u8").tolist() == [3]
    assert np.frombuffer(payload["ts"], dtype="<f8").tolist() == [NOW + 39]
    assert np.frombuffer(payload["kind"], dtype="i1").tolist() == [1]
    # And the detection latency histogram holds that one 200 ms sample
    hist = store.detection_histogram()
    assert sum(hist.values()) == 1
    assert store.screen_counters()["device_alerts"] == 1
    assert store.screen_counters()["screened_readings"] == 5 * 40


def test_a_redelivered_batch_emits_nothing_more() -> None:
    # Given a screened batch that raised an alert
    store = MemoryDetectorStore()
    batches = _warm_then_spike()
    emitted = _screen_all(store, batches)
    # When its last batch is delivered again
    again: list[dict[str, Any]] = []
    result = screen_batch(batches[-1], store, again.append)
    # Then it is skipped: no alert, no state change
    assert result is None and again == [] and len(emitted) == 1


def test_normal_traffic_false_alert_rate_end_to_end_through_the_task() -> None:
    # Given seeded normal traffic for 500 devices, cut into 5,000-reading batches
    traffic = normal_traffic(7, 500, 200)
    store = MemoryDetectorStore()
    size = 5_000
    batches = [
        _batch(
            f"n{i}",
            traffic.device_id[i : i + size],
            traffic.ts[i : i + size],
            traffic.value[i : i + size],
        )
        for i in range(0, traffic.ts.size, size)
    ]
    # When every batch goes through the screening task's function
    emitted = _screen_all(store, batches)
    alerts = sum(p["n"] for p in emitted)
    per_thousand = 1000.0 * alerts / traffic.ts.size
    print(
        f"screening task: {alerts} alerts in {traffic.ts.size} readings = {per_thousand:.3f}/1,000"
    )
    # Then fewer than 0.5 false alerts per 1,000 readings
    assert per_thousand < 0.5


def _runtime(
    make_runtime: MakeRuntime, registry: Registry, sink: MemorySink, client: Any = None
) -> Runtime:
    """A runtime (memory, or Redis on ``client``) with ``registry`` stored, notifying ``sink``."""
    rt = make_runtime(client)
    rt.stores.state.save_registry(registry)
    rt.sinks = [sink]
    return rt


def _ticks(app: RecordingApp) -> list[tuple[str, float]]:
    """(region, countdown) of every incident tick booked."""
    return [
        (args[0]["region"], opts["countdown"])
        for name, args, opts in app.sent
        if name == INCIDENT_TICK_TASK
    ]


def _alerts_payload(batch_id: str, device_ids: Any, ts: float) -> dict[str, Any]:
    dev = np.asarray(device_ids, dtype="<u8")
    return {
        "v": 1,
        "batch_id": batch_id,
        "region": "eu-west",
        "n": int(dev.size),
        "device_id": dev.tobytes(),
        "ts": np.full(dev.size, ts, dtype="<f8").tobytes(),
        "kind": np.full(dev.size, 3, dtype="i1").tobytes(),
        "emitted_ts": ts + 0.1,
    }


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_cascade_folds_into_few_incidents(
    kind: str, make_runtime: MakeRuntime, recording_app: RecordingApp
) -> None:
    # Given a fleet in groups of 1,000 and device alerts from 2,500 devices in 3 groups
    registry = generate_registry(3_000, seed=0)
    sink = MemorySink()
    client = fakeredis.FakeRedis() if kind == "redis" else None
    rt = _runtime(make_runtime, registry, sink, client)
    ids = np.arange(1, 2_501)
    # When they arrive in five screened batches, then the group wait passes
    for i, chunk in enumerate(np.array_split(ids, 5)):
        handle_alerts(rt, _alerts_payload(f"s{i}", chunk, NOW), now_ts=NOW + 0.1)
    assert sink.documents == []  # still inside the group wait
    ticks = _ticks(recording_app)
    assert ticks and ticks[0] == ("eu-west", pytest.approx(0.5))
    handle_tick(rt, {"region": "eu-west"}, now_ts=NOW + 0.7)
    # Then three incidents fire (one per group), linked as one cascade, paging
    docs = sink.documents
    assert [d["status"] for d in docs] == ["firing"] * 3
    assert sum(d["device_count"] for d in docs) == 2_500
    assert len({d["cascade_id"] for d in docs}) == 1
    assert {d["severity"] for d in docs} == {"page"}
    assert all(d["detection_latency_ms"] == pytest.approx(700.0) for d in docs)
    assert sum(rt.stores.detector.detection_histogram("notify").values()) == 3


def test_a_batch_of_alerts_is_folded_once(make_runtime: MakeRuntime) -> None:
    # Given one batch of alerts folded and notified
    registry = generate_registry(100, seed=0)
    sink = MemorySink()
    rt = _runtime(make_runtime, registry, sink)
    payload = _alerts_payload("s1", [1, 2, 3, 4, 5, 6], NOW)
    handle_alerts(rt, payload, now_ts=NOW)
    handle_tick(rt, {"region": "eu-west"}, now_ts=NOW + 1)
    # When the same batch of alerts is delivered again
    handle_alerts(rt, payload, now_ts=NOW + 2)
    handle_tick(rt, {"region": "eu-west"}, now_ts=NOW + 40)
    # Then the incident still counts each alert once and no update was sent
    assert [d["status"] for d in sink.documents] == ["firing"]
    assert sink.documents[0]["alert_count"] == 6


def test_an_incident_resolves_on_a_tick_after_the_timeout(
    make_runtime: MakeRuntime, recording_app: RecordingApp
) -> None:
    registry = generate_registry(100, seed=0)
    sink = MemorySink()
    rt = _runtime(make_runtime, registry, sink)
    # Given a fired incident
    handle_alerts(rt, _alerts_payload("s1", [1], NOW), now_ts=NOW)
    handle_tick(rt, {"region": "eu-west"}, now_ts=NOW + 1)
    # Then the next tick is booked for its resolve timeout, and there it resolves
    assert _ticks(recording_app)[-1] == ("eu-west", pytest.approx(299.0))
    handle_tick(rt, {"region": "eu-west"}, now_ts=NOW + 300)
    assert [d["status"] for d in sink.documents] == ["firing", "resolved"]


def test_injected_spikes_are_each_alerted_once() -> None:
    # Given normal traffic with spikes injected on 20 devices
    traffic = normal_traffic(3, 200, 150)
    injected = inject(
        5,
        traffic.device_id,
        traffic.ts,
        traffic.value,
        traffic.group,
        AnomalySpec("spike", n_devices=20, magnitude=40.0),
    )
    size = 2_000
    batches = [
        _batch(
            f"i{i}",
            traffic.device_id[i : i + size],
            traffic.ts[i : i + size],
            injected.value[i : i + size],
        )
        for i in range(0, traffic.ts.size, size)
    ]
    # When screened
    emitted = _screen_all(MemoryDetectorStore(), batches)
    found = {
        (int(d), float(t))
        for p in emitted
        for d, t in zip(
            np.frombuffer(p["device_id"], dtype="<u8"),
            np.frombuffer(p["ts"], dtype="<f8"),
            strict=True,
        )
    }
    # Then every injected spike is alerted on its own reading
    truth = {(t.device_id, t.onset_ts) for t in injected.truth}
    assert truth <= found


def test_an_incident_document_says_what_its_first_alert_saw(make_runtime: MakeRuntime) -> None:
    # Given a warmed fleet whose device 3 spikes by 50 on its last reading
    registry = generate_registry(100, seed=0)
    payloads = _screen_all(MemoryDetectorStore(), _warm_then_spike())
    sink = MemorySink()
    rt = _runtime(make_runtime, registry, sink)
    # When the alerts are folded and the group wait passes
    for payload in payloads:
        handle_alerts(rt, payload, now_ts=NOW + 40)
    handle_tick(rt, {"region": "eu-west"}, now_ts=NOW + 41)
    # Then the incident document carries the alert's kind, observed and expected values,
    # band and score, and the observed value lies outside the band around the expected one
    first = sink.documents[0]["first_alert"]
    assert first["device_id"] == 3
    assert first["kind"] == "spike"
    assert first["score"] >= 1.0
    assert abs(first["observed"] - first["expected"]) > first["band"]
    assert first["expected"] == pytest.approx(20.0, abs=1.0)


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_alerts_stay_in_the_ledger_until_the_anomaly_task_folds_them(
    make_runtime: MakeRuntime, recording_app: RecordingApp, backend: str
) -> None:
    # Given a runtime whose publisher sends one batch of alerts
    client = fakeredis.FakeRedis() if backend == "redis" else None
    rt = make_runtime(client)
    rt.stores.state.save_registry(generate_registry(100, seed=0))
    rt.publisher.send_alerts(_alerts_payload("s9", [1, 2, 3], NOW))
    # Then the message is in the in-flight ledger, for a reaper to send again if lost
    assert rt.stores.inflight.size() == 1
    (sent,) = recording_app.named(ANOMALY_TASK)
    # When the anomaly task folds the message it was sent
    handle_alerts(rt, sent[0], now_ts=NOW)
    # Then the entry is settled
    assert rt.stores.inflight.size() == 0


def _screened_copies(rt: Runtime, tier: str) -> list[Batch]:
    """Warmed-up devices screened as copies of ``tier`` by the screening task, the last
    copy holding device 3's spike; returns the copies."""
    batches = [dataclasses.replace(b, tier=tier) for b in _warm_then_spike()]
    for b in batches:
        handle_screen(rt, encode_batch(b))
    return batches


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_standard_copy_folds_its_alerts_where_it_is_screened(
    kind: str, make_runtime: MakeRuntime, recording_app: RecordingApp
) -> None:
    # Given a worker screening standard copies (it takes its region's anomaly work too)
    sink = MemorySink()
    client = fakeredis.FakeRedis() if kind == "redis" else None
    rt = _runtime(make_runtime, generate_registry(100, seed=0), sink, client)
    rt.clock = lambda: NOW + 40
    # When a copy holding a spike is screened
    batches = _screened_copies(rt, "standard")
    # Then its alert is folded into the region's incidents there: no anomaly message
    assert recording_app.named(ANOMALY_TASK) == []
    assert rt.stores.state.counters()["alerts_folded_at_screening"] == 1
    # and the incident fires at the tick that fold booked, once the group wait is over
    ((region, wait_s),) = _ticks(recording_app)
    handle_tick(rt, {"region": region}, now_ts=NOW + 40 + wait_s)
    assert [(d["status"], d["device_count"]) for d in sink.documents] == [("firing", 1)]
    # When that copy is delivered again
    handle_screen(rt, encode_batch(batches[-1]))
    # Then nothing is folded or sent again
    assert rt.stores.state.counters()["alerts_folded_at_screening"] == 1
    assert recording_app.named(ANOMALY_TASK) == []


def test_a_premium_copy_folds_its_alerts_and_hands_its_notices_to_the_anomaly_queue(
    make_runtime: MakeRuntime, recording_app: RecordingApp
) -> None:
    # Given the premium lane screening premium copies (premium waits behind its work)
    sink = MemorySink()
    rt = _runtime(make_runtime, generate_registry(100, seed=0), sink)
    rt.clock = lambda: NOW + 40
    # When a copy holding a spike is screened
    _screened_copies(rt, "premium")
    # Then its alert is folded into the region's incidents there: no anomaly message
    assert recording_app.named(ANOMALY_TASK) == []
    assert rt.stores.state.counters()["alerts_folded_at_screening"] == 1
    # When a later premium copy, device 4 spiking, is screened once the group wait is over
    ((_, wait_s),) = _ticks(recording_app)
    rt.clock = lambda: NOW + 41 + wait_s
    values = 20.0 + np.random.default_rng(2).normal(0, 0.5, 5)
    values[3] += 50.0
    later = _batch("b-later", np.arange(1, 6), np.full(5, NOW + 40), values)
    assert handle_screen(rt, encode_batch(later)) == 1
    # Then the notice that fold left due goes to the notify task, not to the sinks
    assert sink.documents == []
    ((notices,),) = recording_app.named(NOTIFY_TASK)
    assert [d["status"] for d in notices["documents"]] == ["firing"]
    assert rt.stores.inflight.size() == 1
    # and the notify task sends it to the sinks, settling its ledger entry
    assert handle_notices(rt, notices) == 1
    assert [d["status"] for d in sink.documents] == ["firing"]
    assert sink.documents[0]["incident_id"] == notices["documents"][0]["incident_id"]
    assert rt.stores.inflight.size() == 0


def test_a_notices_message_of_the_wrong_shape_is_dead_lettered(make_runtime: MakeRuntime) -> None:
    # Given a runtime notifying a sink
    sink = MemorySink()
    rt = _runtime(make_runtime, generate_registry(100, seed=0), sink)
    # When the notify task gets documents that are not objects
    assert handle_notices(rt, {"region": "eu-west", "documents": [1, 2], "firing_ms": []}) == 0
    # Then nothing is sent and the message is dead-lettered
    assert sink.documents == []
    assert [d.reason for d in rt.stores.state.dead_letters(10)] == ["invalid_notices"]


def test_a_fold_failing_where_screened_sends_the_alerts_instead(
    make_runtime: MakeRuntime, recording_app: RecordingApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker screening standard copies whose incident store is unreachable
    sink = MemorySink()
    rt = _runtime(make_runtime, generate_registry(100, seed=0), sink)
    fold = rt.stores.incidents.fold

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("incident store unreachable")

    monkeypatch.setattr(rt.stores.incidents, "fold", unreachable)
    # When a copy holding a spike is screened
    _screened_copies(rt, "standard")
    # Then its alert is sent to the anomaly queue instead of being lost
    ((payload,),) = recording_app.named(ANOMALY_TASK)
    assert np.frombuffer(payload["device_id"], dtype="<u8").tolist() == [3]
    assert "alerts_folded_at_screening" not in rt.stores.state.counters()
    # and the anomaly task folds it once the store is back
    monkeypatch.setattr(rt.stores.incidents, "fold", fold)
    handle_alerts(rt, payload, now_ts=NOW + 40)
    handle_tick(rt, {"region": "eu-west"}, now_ts=NOW + 45)
    assert [(d["status"], d["device_count"]) for d in sink.documents] == [("firing", 1)]
