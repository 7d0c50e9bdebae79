"""The screening task publishes a batch's alerts only once its commit applied: a batch
whose devices changed under it is screened again, alerts a crash left unpublished go out
with the redelivery, and a batch that keeps colliding is handed back to Celery."""

from __future__ import annotations

from typing import Any

import fakeredis
import numpy as np
import pytest
from runtime_doubles import MakeRuntime, RecordingApp

from alerts.stream_sink import MemorySink
from scheduler.detector_state import COUNT
from scheduler.errors import TransientError
from scheduler.model import Batch
from scheduler.registry import generate_registry
from scheduler.wire import ANOMALY_TASK
from stores.detector_store import DetectorStore, MemoryDetectorStore, RedisDetectorStore
from stores.keys import Keys
from tasks.anomaly import handle_alerts, handle_tick
from tasks.screen import (
    CONTENDED_PAUSE_S,
    IMMEDIATE_ATTEMPTS,
    SCREEN_ATTEMPTS,
    StatesContended,
    screen_batch,
)

NOW = 1_700_000_000.0


def _batch(batch_id: str, device_ids: list[int], ts: list[float], values: list[float]) -> Batch:
    t = np.array(ts, dtype=np.float64)
    return Batch(
        batch_id,
        "eu-west",
        "premium",
        ("value",),
        np.array(device_ids, dtype=np.uint64),
        t,
        np.array(values, dtype=np.float64).reshape(-1, 1),
        t,
    )


def _warmed(store: DetectorStore, devices: list[int], readings: int = 40) -> float:
    """Devices screened ``readings`` times with a little noise; returns the next ts."""
    rng = np.random.default_rng(2)
    for r in range(readings):
        values = (20.0 + rng.normal(0, 0.5, len(devices))).tolist()
        ts = [NOW + r] * len(devices)
        screen_batch(_batch(f"w{r}", devices, ts, values), store, lambda _: None)
    return NOW + readings


def _store(kind: str) -> DetectorStore:
    return MemoryDetectorStore() if kind == "memory" else RedisDetectorStore(fakeredis.FakeRedis())


class _Interleaved:
    """Delegates to ``store``; before each of the first ``times`` commits, runs ``between``
    (another batch that loaded nothing yet commits first)."""

    def __init__(self, store: DetectorStore, between: Any, times: int = 1) -> None:
        self._store = store
        self._between = between
        self._times = times

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def commit(self, *args: Any, **kwargs: Any) -> bool:
        if self._times:
            self._times -= 1
            self._between()
        return self._store.commit(*args, **kwargs)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_batch_screened_again_after_a_collision_emits_its_alerts_once(kind: str) -> None:
    # Given warmed devices and a batch in which device 3 spikes
    store = _store(kind)
    next_ts = _warmed(store, [1, 2, 3])
    spike = _batch("spike", [1, 2, 3], [next_ts + 1] * 3, [20.0, 20.0, 90.0])
    # And another batch with a normal reading of device 3 commits between its load and
    # its commit
    other = _batch("other", [3], [next_ts], [20.0])
    emitted: list[dict[str, Any]] = []

    def commit_other() -> None:
        screen_batch(other, store, emitted.append)

    # When the spike batch is screened
    alerts = screen_batch(spike, _Interleaved(store, commit_other), emitted.append)
    # Then its alert is emitted once, and device 3's state has seen every reading
    assert alerts == 1
    assert [np.frombuffer(p["device_id"], dtype="<u8").tolist() for p in emitted] == [[3]]
    states = store.load("probe", np.array([3], dtype=np.uint64), 1).states
    assert states is not None and states[0, COUNT] == 40 + 1 + 1


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_alerts_a_crash_left_unpublished_go_out_with_the_redelivery(kind: str) -> None:
    # Given a batch with an alert whose worker dies after the commit, before publishing
    store = _store(kind)
    next_ts = _warmed(store, [1, 2, 3])
    spike = _batch("spike", [1, 2, 3], [next_ts] * 3, [20.0, 20.0, 90.0])
    screened: list[dict[str, Any]] = []

    def killed(payload: dict[str, Any]) -> None:
        screened.append(payload)
        raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError):
        screen_batch(spike, store, killed)
    # When the batch is delivered again
    again: list[dict[str, Any]] = []
    first = screen_batch(spike, store, again.append)
    # Then it is not screened again, but the committed alerts are published, as they were
    assert first is None
    assert again == screened
    # And a further delivery has nothing left to publish
    later: list[dict[str, Any]] = []
    assert screen_batch(spike, store, later.append) is None and later == []


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_batch_whose_devices_keep_changing_is_handed_back_to_celery(kind: str) -> None:
    # Given a device that another batch commits before every commit of this one
    store = _store(kind)
    next_ts = _warmed(store, [1])
    others = iter(range(SCREEN_ATTEMPTS))

    def commit_other() -> None:
        i = next(others)
        screen_batch(_batch(f"o{i}", [1], [next_ts + i], [20.0]), store, lambda _: None)

    contended = _Interleaved(store, commit_other, times=SCREEN_ATTEMPTS)
    pauses: list[float] = []
    batch = _batch("mine", [1], [next_ts + 10], [20.0])
    # When it is screened
    with pytest.raises(StatesContended) as raised:
        screen_batch(batch, contended, lambda _: None, pause=pauses.append)
    # Then it gives up with a transient error (Celery retries it), after screening again
    # at once a few times and then after short pauses that grow with the attempts, and
    # nothing of it was committed
    assert isinstance(raised.value, TransientError)
    assert len(pauses) == SCREEN_ATTEMPTS - IMMEDIATE_ATTEMPTS
    bounds = [CONTENDED_PAUSE_S * a for a in range(IMMEDIATE_ATTEMPTS, SCREEN_ATTEMPTS)]
    assert all(0.0 <= p <= bound for p, bound in zip(pauses, bounds, strict=True))
    assert store.load("mine", np.array([1], dtype=np.uint64), 1).states is not None
    # And it gave back the turn it took: another batch need not wait it out
    assert store.take_turn("next", "eu-west")
    store.give_turn("next", "eu-west")
    # And its retry, with the device left alone, applies over every other batch's step
    assert screen_batch(batch, store, lambda _: None) is not None
    states = store.load("probe", np.array([1], dtype=np.uint64), 1).states
    assert states is not None and states[0, COUNT] == 40 + SCREEN_ATTEMPTS + 1


def test_alerts_published_again_from_the_outbox_are_folded_once(
    make_runtime: MakeRuntime, recording_app: RecordingApp
) -> None:
    # Given a Redis runtime where a batch's alert was committed, and published twice
    # (once by its screening, once more by a redelivery reading the outbox)
    client = fakeredis.FakeRedis()
    rt = make_runtime(client, key_prefix="t")
    rt.stores.state.save_registry(generate_registry(100, seed=0))
    sink = MemorySink()
    rt.sinks = [sink]
    store = RedisDetectorStore(client, Keys("t"))
    next_ts = _warmed(store, [1, 2, 3])
    spike = _batch("spike", [1, 2, 3], [next_ts] * 3, [20.0, 20.0, 90.0])

    def published(payload: dict[str, Any]) -> None:
        rt.publisher.send_alerts(payload)

    def killed(payload: dict[str, Any]) -> None:
        published(payload)
        raise RuntimeError("worker killed before the outbox entry went")

    with pytest.raises(RuntimeError):
        screen_batch(spike, store, killed)
    assert screen_batch(spike, store, published) is None
    copies = recording_app.named(ANOMALY_TASK)
    assert len(copies) == 2
    # When the anomaly task takes both copies
    for (payload,) in copies:
        handle_alerts(rt, payload, now_ts=next_ts + 1)
    handle_tick(rt, {"region": "eu-west"}, now_ts=next_ts + 60)
    # Then the alert is folded into an incident once
    assert [d["alert_count"] for d in sink.documents if d["status"] == "firing"] == [1]
