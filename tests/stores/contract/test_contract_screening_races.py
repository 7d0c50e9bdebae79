"""Two screenings of one device at once (two workers, or a held copy beside its admitted
copy): both read the same state, and the result must be as if they ran one after the
other. Redis and memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from scheduler.detector_state import COUNT, DROPMARK, LASTTS, pack_states, unpack_states
from scheduler.model import Batch
from stores.bundle import Stores
from tasks.screen import screen_batch

NOW = 1_700_000_000.0


def _batch(batch_id: str, device_ids: list[int], first_ts: float) -> Batch:
    ids = np.array(device_ids, dtype=np.uint64)
    ts = first_ts + np.arange(ids.size, dtype=np.float64)
    values = np.full((ids.size, 1), 20.0)
    return Batch(batch_id, "eu", "premium", ("value",), ids, ts, values, ts)


class _CommitsLast:
    """Delegates to ``store``, but runs ``before_commit`` once, just before the first commit:
    the batch it screens loads the same old state and commits first."""

    def __init__(self, store: Any, before_commit: Any) -> None:
        self._store = store
        self._before_commit = before_commit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        if self._before_commit is not None:
            run, self._before_commit = self._before_commit, None
            run()
        return self._store.commit(*args, **kwargs)


def _readings_seen(stores: Stores, device_id: int) -> float:
    states = stores.detector.load("probe", np.array([device_id], dtype=np.uint64), 1).states
    assert states is not None
    return float(states[0, COUNT])


def test_two_screenings_of_one_device_at_once_both_count(stores: Stores) -> None:
    # Given a device with a state, and two batches of its readings screened at once
    # (A loads, B loads, B commits, A commits)
    screen_batch(_batch("w", [7], NOW), stores.detector, lambda _: None)
    a, b = _batch("a", [7, 7, 7], NOW + 10), _batch("b", [7, 7], NOW + 20)

    def screen_b() -> None:
        screen_batch(b, stores.detector, lambda _: None)

    # When A commits after B
    screen_batch(a, _CommitsLast(stores.detector, screen_b), lambda _: None)  # type: ignore[arg-type]
    # Then the device's state has seen every reading: none lost to the later commit
    assert _readings_seen(stores, 7) == 1 + 3 + 2


def test_a_screening_loaded_before_a_dropout_mark_screens_again_from_it(
    stores: Stores, swept_blobs: Callable[[], dict[int, bytes]]
) -> None:
    # Given device 7 with a state, and a batch of its readings that loaded it
    screen_batch(_batch("w", [7, 7], NOW), stores.detector, lambda _: None)
    ids = np.array([7], dtype=np.uint64)

    def mark_silence() -> None:
        seen = swept_blobs()[7]
        marked = unpack_states([seen])
        marked[0, DROPMARK] = marked[0, LASTTS]
        written = stores.dropout.mark(ids, [seen], pack_states(marked), ("eu:standard",))
        assert written.tolist() == [True]

    # When the dropout sweep marks its silence before the batch commits
    batch = _batch("a", [7], NOW + 100)
    screen_batch(batch, _CommitsLast(stores.detector, mark_silence), lambda _: None)  # type: ignore[arg-type]
    # Then the batch's step is taken from the marked state: the mark stays, and every
    # reading is counted
    states = stores.detector.load("probe", ids, 1).states
    assert states is not None
    assert states[0, DROPMARK] == NOW + 1
    assert states[0, COUNT] == 3
