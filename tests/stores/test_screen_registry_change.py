"""A screening whose worker holds a registry snapshot older than the stored registry
screens with the registry reloaded, so its commit is checked and counted in the write
streams the devices belong to now (``stores.detector_store``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import fakeredis
import numpy as np
import pytest
from runtime_doubles import MakeRuntime

from runtime.runtime import Runtime
from scheduler.codec import encode_batch
from scheduler.errors import RegistryChanged
from scheduler.model import Batch
from scheduler.registry import Registry, detector_stream, generate_registry
from stores.detector_store import LoadedBatch, RedisDetectorStore
from tasks.screen import REGISTRY_ATTEMPTS, handle_screen

NOW = 1_700_000_000.0


def _batch(registry: Registry, region: str, tier: str) -> Batch:
    """A batch of every device of ``registry`` at home in ``region`` on ``tier``."""
    home = registry.home_region == registry.topology.region_code(region)
    ids = registry.device_id[home & (registry.tier == registry.topology.tier_code(tier))]
    ts = np.full(ids.size, NOW)
    return Batch(
        batch_id="b1",
        region=region,
        tier=tier,
        metrics=("value",),
        device_id=ids,
        ts=ts,
        values=np.full((ids.size, 1), 20.0),
        ingest_ts=ts,
    )


def _moved(registry: Registry) -> Registry:
    """The same devices, each now at home in the next region."""
    regions = len(registry.topology.regions)
    return dataclasses.replace(registry, home_region=(registry.home_region + 1) % regions)


def _stale_worker(make_runtime: MakeRuntime) -> tuple[Runtime, Registry, fakeredis.FakeRedis]:
    """A worker that took its snapshot of the registry before it was replaced."""
    client = fakeredis.FakeRedis()
    rt = make_runtime(client)
    old = generate_registry(200, seed=3)
    rt.stores.state.save_registry(old)
    assert rt.registry.get().version == 1
    rt.stores.state.save_registry(_moved(old))
    return rt, old, client


def test_a_stale_registry_snapshot_screens_again_with_the_reloaded_one(
    make_runtime: MakeRuntime,
) -> None:
    # Given a worker whose snapshot (version 1) has these devices at home in the first
    # region, and the registry since replaced (version 2) with them in the next one
    rt, old, client = _stale_worker(make_runtime)
    first, second = old.topology.regions[:2]
    batch = _batch(old, first, "standard")
    assert batch.device_id.size > 0
    # When the worker screens a batch of them before its snapshot is due for a check
    handle_screen(rt, encode_batch(batch))
    # Then it screened with the registry reloaded, once: its commit counted in the
    # devices' write stream under the new registry, not under the old one
    store = rt.stores.detector
    assert isinstance(store, RedisDetectorStore)
    keys = store.keys
    assert client.get(keys.detector_stream_writes(detector_stream(second, "standard"))) == b"1"
    assert client.get(keys.detector_stream_writes(detector_stream(first, "standard"))) is None
    counters = store.screen_counters()
    assert counters["screened_readings"] == batch.device_id.size
    assert counters["screen_duplicates"] == 0
    assert rt.registry.get().version == 2


class _ReplacedBeforeEveryLoad(RedisDetectorStore):
    """The registry is replaced again just before every load: it never settles."""

    def __init__(self, inner: RedisDetectorStore, replace: Any) -> None:
        super().__init__(inner.client, inner.keys)
        self.replace = replace
        self.loads = 0

    def load(self, *args: Any, **kwargs: Any) -> LoadedBatch:
        self.loads += 1
        self.replace()
        return super().load(*args, **kwargs)


def test_a_registry_that_keeps_changing_leaves_the_batch_to_celery(
    make_runtime: MakeRuntime,
) -> None:
    # Given a registry replaced again before each load of the batch
    rt, old, _ = _stale_worker(make_runtime)
    store = rt.stores.detector
    assert isinstance(store, RedisDetectorStore)
    changing = _ReplacedBeforeEveryLoad(store, lambda: rt.stores.state.save_registry(old))
    rt.stores.detector = changing
    batch = _batch(old, old.topology.regions[0], "standard")
    # When the batch is screened
    # Then after a bounded number of screenings RegistryChanged goes to Celery (retried),
    # and nothing of the batch was committed
    with pytest.raises(RegistryChanged):
        handle_screen(rt, encode_batch(batch))
    assert changing.loads == REGISTRY_ATTEMPTS
    assert rt.stores.detector.screen_counters()["screened_readings"] == 0
    # And once the registry settles, the retried message screens the batch once
    changing.replace = lambda: None
    handle_screen(rt, encode_batch(batch))
    assert rt.stores.detector.screen_counters()["screened_readings"] == batch.device_id.size
