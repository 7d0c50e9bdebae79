"""Maintenance operations do the same on Redis and on the in-memory stores."""

from __future__ import annotations

import time

import numpy as np
import pytest

from scheduler import defaults
from scheduler.errors import ConfigError
from scheduler.registry import generate_registry
from scheduler.rollup import compute_rollups
from stores.bundle import Stores


def apply(stores: Stores, batch_id: str, ts: float) -> None:
    delta = compute_rollups(np.array([7], dtype=np.uint64), np.array([ts]), np.ones((1, 1)))
    assert stores.state.apply_batch(batch_id, "standard", delta, {}, 1)


def test_rebuilding_a_canonical_registry_rewrites_nothing(stores: Stores) -> None:
    stores.state.save_registry(generate_registry(50, seed=1))
    version = stores.state.registry_version()
    done = stores.maintenance.run("rebuild_registry", "", time.time() + 10)
    assert (done.done, done.counts) == (True, {"devices": 50, "rewritten": 0})
    assert stores.state.registry_version() == version


def test_rebuilding_without_a_registry_fails_the_try(stores: Stores) -> None:
    with pytest.raises(ConfigError):
        stores.maintenance.run("rebuild_registry", "", time.time() + 10)


def test_expired_rollup_minutes_are_deleted_and_recent_ones_kept(stores: Stores) -> None:
    now = time.time()
    apply(stores, "old", now - defaults.ROLLUP_TTL_S - 600)
    apply(stores, "new", now - 60)
    done = stores.maintenance.run("expire_rollups", "", now + 10)
    assert done.done and done.counts["deleted"] >= 1
    assert stores.state.rollup_count_total() == 1


def test_streams_trim_and_compaction_finish_and_unknown_operations_are_refused(
    stores: Stores,
) -> None:
    assert stores.maintenance.run("trim_streams", "", time.time() + 10).done
    compacted = stores.maintenance.run("compact_detector_state", "", time.time() + 10)
    assert compacted.done and compacted.counts.get("dropped", 0) == 0
    with pytest.raises(ConfigError):
        stores.maintenance.run("defragment_everything", "", time.time() + 10)


def test_a_screening_loaded_before_compaction_does_not_bring_the_dropped_state_back(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given device 1 screened once, and a batch that loaded its state, still screening
    ids = np.array([1], dtype=np.uint64)
    first = stores.detector.load("first", ids, 1)
    assert first.states is not None
    assert stores.detector.commit(first, first.states + 1.0, {}, 1, 0)
    screening = stores.detector.load("screening", ids, 1)
    assert screening.states is not None and screening.states[0, 0] == 1.0
    # When compaction drops the state (every state counts as silent long enough here)
    monkeypatch.setattr(defaults, "SILENT_DEVICE_S", 0)
    compacted = stores.maintenance.run("compact_detector_state", "", time.time() + 10)
    assert compacted.counts["dropped"] == 1
    # Then the batch's commit of what it screened from the dropped state is refused
    assert not stores.detector.commit(screening, screening.states + 1.0, {}, 1, 0)
    assert stores.detector.screen_counters()["screen_collisions"] == 1
    # And screened again, it starts from a fresh state
    again = stores.detector.load("screening", ids, 1)
    assert again.states is not None and again.states[0, 0] == 0.0
