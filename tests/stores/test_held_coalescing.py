"""Given readings held back and picked for screening, they go out in dense copies, in
time order per device."""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_screening_while_held import RecordingApp, _producer

from ingest.celery_publisher import CeleryPublisher
from ingest.held_coalescer import HeldCoalescer
from ingest.producer import Producer
from scheduler.held_screening import PER_UNSCREENED, HeldScreenBudget
from scheduler.registry import generate_registry
from scheduler.wire import SCREEN_TASK
from stores.memory_state import MemoryStateStore


def _held_copies(app: RecordingApp) -> list[list[tuple[int, float]]]:
    return [
        list(zip(b.device_id.tolist(), b.ts.tolist(), strict=True))
        for name, _, b in app.sent
        if name == SCREEN_TASK and "held" in b.batch_id
    ]


def _held_by_device(app: RecordingApp) -> dict[int, list[float]]:
    """Per device, the event times its held copies carried, in the order sent."""
    seen: dict[int, list[float]] = {}
    for copy in _held_copies(app):
        for d, t in copy:
            seen.setdefault(d, []).append(t)
    return seen


def _clocked_closed_region(
    app: RecordingApp, budget: HeldScreenBudget
) -> tuple[Producer, np.ndarray, list[float]]:
    """A producer on a clock of the test's own (``now[0]``), every region closed to
    non-premium readings, and 300 standard eu-west devices."""
    now = [time.time()]
    reg = generate_registry(2_000, seed=3)
    producer = Producer(
        lambda: reg,
        CeleryPublisher(app, screening=True, clock=lambda: now[0]),  # type: ignore[arg-type]
        MemoryStateStore(),
        clock=lambda: now[0],
        backlog_gate=lambda: np.full(3, True),
        held_screening=budget,
    )
    ids = reg.device_id[np.flatnonzero((reg.tier == 1) & (reg.home_region == 0))[:300]]
    return producer, ids, now


def _held_in_closed_region(
    app: RecordingApp, closed: list[bool]
) -> tuple[Producer, np.ndarray, float]:
    """A producer whose eu-west is closed while ``closed[0]``, holding one reading (2 s old)
    of each of 300 standard eu-west devices for screening."""
    producer = _producer(lambda: np.full(3, closed[0]), app)
    reg = producer._registry()
    ids = reg.device_id[np.flatnonzero((reg.tier == 1) & (reg.home_region == 0))[:300]]
    now = time.time()
    producer.ingest_columns(ids, np.full(300, now - 2), np.zeros(300), now_ts=now)
    return producer, ids, now


def test_held_readings_of_several_chunks_go_out_in_one_copy_once_old_enough() -> None:
    # Given eu-west closed to non-premium readings, on a clock of the test's own
    app = RecordingApp()
    producer, ids, now = _clocked_closed_region(app, HeldScreenBudget())
    start = now[0]
    # When three chunks of one reading per device are held back, 0.1 s apart
    for k in range(3):
        now[0] = start + k / 10
        producer.ingest_columns(ids, np.full(300, start - 3 + k), np.zeros(300))
    # Then none was sent yet: they coalesce
    assert not _held_copies(app)
    # When their age limit has passed (and the publisher's own, for copies it was given)
    for wait_s in (0.6, 1.2):
        now[0] = start + wait_s
        producer.poll()
    # Then one copy holds all 900, three readings per device, oldest first
    (copy,) = _held_copies(app)
    assert len(copy) == 900
    _, counts = np.unique([d for d, _ in copy], return_counts=True)
    assert set(counts.tolist()) == {3}
    assert [t for _, t in copy] == sorted(t for _, t in copy)


def test_a_newer_reading_admitted_while_held_ones_coalesce_is_screened_after_them() -> None:
    # Given eu-west closed, and one held reading per device coalescing for screening
    app, closed = RecordingApp(), [True]
    producer, ids, now = _held_in_closed_region(app, closed)
    # When the region opens and newer readings of the same devices are admitted at once
    closed[0] = False
    producer.ingest_columns(ids, np.full(300, now - 1), np.zeros(300), now_ts=now + 0.01)
    producer.flush()
    # Then every device's readings reached screening in time order: the held one first
    seen: dict[int, list[float]] = {}
    for name, _, b in app.sent:
        if name == SCREEN_TASK:
            for d, t in zip(b.device_id.tolist(), b.ts.tolist(), strict=True):
                seen.setdefault(d, []).append(t)
    assert len(seen) == 300
    assert all(ts == [now - 2, now - 1] for ts in seen.values())


def test_only_the_devices_admitted_anew_have_their_held_readings_sent_early() -> None:
    # Given eu-west closed, and held readings of 300 devices coalescing
    app, closed = RecordingApp(), [True]
    producer, ids, now = _held_in_closed_region(app, closed)
    # When the region opens and newer readings of 100 of them are admitted
    closed[0] = False
    producer.ingest_columns(ids[:100], np.full(100, now - 1), np.zeros(100), now_ts=now + 0.01)
    # Then only those 100 devices' held readings left the coalescer early
    held_sent = {d for copy in _held_copies(app) for d, _ in copy}
    assert held_sent <= set(ids[:100].tolist())
    assert producer.held_screener.coalescer.size == 200


def test_a_paced_region_sends_what_its_budget_pays_oldest_first_and_keeps_the_rest() -> None:
    # Given eu-west closed, a budget that has earned nothing yet, copies of 100 readings
    app = RecordingApp()
    budget = HeldScreenBudget(per_admitted=1.0)
    producer, ids, now = _clocked_closed_region(app, budget)
    producer.held_screener.coalescer.max_readings = 100
    start = now[0]
    # When five chunks of one reading per device are held back and picked for screening
    for k in range(5):
        producer.ingest_columns(ids, np.full(300, start - 5 + k), np.zeros(300))
    # Then one copy's worth went (the oldest readings), not the region's 1,500 at once
    coalescer = producer.held_screener.coalescer
    assert coalescer.size == 1_400
    # And once the region's workers drain routine readings at a rate earning 300 held
    # readings per 0.1 s (each earns 1, and PER_UNSCREENED for its screening at
    # admission), each send takes about what was earned since, until all are sent
    budget.follow_drain([3_000.0 / (1.0 + PER_UNSCREENED), 0.0, 0.0])
    sizes = []
    for step in range(1, 30):
        now[0] = start + step * 0.1
        before = coalescer.size
        producer.poll()
        sizes.append(before - coalescer.size)
    assert coalescer.size == 0
    assert max(sizes) <= 330
    producer.flush()
    # And every device's readings reached screening complete and in time order
    seen = _held_by_device(app)
    assert len(seen) == 300
    assert all(ts == [start - 5 + k for k in range(5)] for ts in seen.values())


def test_readings_held_newest_first_in_one_chunk_are_sent_oldest_first() -> None:
    # Given eu-west closed, a budget that has earned nothing yet, copies of 100 readings
    app = RecordingApp()
    producer, ids, now = _clocked_closed_region(app, HeldScreenBudget(per_admitted=1.0))
    producer.held_screener.coalescer.max_readings = 100
    start = now[0]
    # When one chunk holds two readings per device, the newer ones first
    both = np.concatenate([ids, ids])
    ts = np.concatenate([np.full(300, start - 1), np.full(300, start - 2)])
    producer.ingest_columns(both, ts, np.zeros(600))
    # Then the copy the budget pays for is taken, the rest kept
    assert producer.held_screener.coalescer.size == 500
    # And every device's readings reach screening in time order: that copy took the
    # oldest readings, not the first in the chunk
    producer.flush()
    seen = _held_by_device(app)
    assert len(seen) == 300
    assert all(t == [start - 2, start - 1] for t in seen.values())


def test_the_coalescer_knows_when_its_oldest_kept_reading_was_taken_on() -> None:
    # Given three chunks of 100 readings taken on at 10 s, 11 s and 12 s
    coalescer = HeldCoalescer(n_rows=300, max_readings=1_000)
    assert coalescer.oldest_ts(0) is None
    for k in range(3):
        rows = np.arange(100 * k, 100 * (k + 1), dtype=np.int64)
        t = np.full(100, 100.0 + k)
        held = (rows, rows.astype(np.uint64), t, np.zeros(100), np.ones(100, dtype=np.int8))
        coalescer.add(0, held, now_ts=10.0 + k)
    assert coalescer.oldest_ts(0) == 10.0
    # When the oldest 150 go
    coalescer.peek(0, limit=150)
    coalescer.taken(0, limit=150)
    # Then the oldest left was taken on with the second chunk
    assert coalescer.oldest_ts(0) == 11.0
    # And once the rest go, none is kept
    coalescer.peek(0)
    coalescer.taken(0)
    assert coalescer.oldest_ts(0) is None


def _piece(first_row: int, n: int, t: np.ndarray) -> tuple[np.ndarray, ...]:
    rows = np.arange(first_row, first_row + n, dtype=np.int64)
    return rows, rows.astype(np.uint64), t, rows.astype(np.float64), np.ones(n, dtype=np.int8)


@pytest.mark.parametrize("overlapping", [False, True], ids=["in-order", "overlapping"])
def test_sends_of_the_oldest_readings_take_them_in_time_order_across_many_pieces(
    overlapping: bool,
) -> None:
    # Given 40 pieces of 50 readings, each newer than the one before (or, overlapping,
    # each piece's times spread over the next piece's too, and newest first inside it)
    coalescer = HeldCoalescer(n_rows=2_000, max_readings=100_000)
    rng = np.random.default_rng(7)
    for k in range(40):
        if overlapping:
            t = np.sort(rng.uniform(k, k + 2.5, 50))[::-1].copy()
        else:
            t = k + np.linspace(0.0, 0.9, 50)
        coalescer.add(0, _piece(50 * k, 50, t), now_ts=1_000.0 + k)
    everything = np.sort(np.concatenate([p[2] for p in coalescer._pieces[0]]), kind="stable")
    # When the oldest 130 go at a time, as a paced region sends them
    sent: list[np.ndarray] = []
    while coalescer.size_of(0):
        rows, _, t, values, _ = coalescer.peek(0, limit=130)
        assert rows.size == min(130, coalescer.size_of(0))
        assert (values == rows).all()  # columns stay aligned
        coalescer.taken(0, limit=130)
        sent.append(t)
    # Then every reading went once, oldest first over all the sends
    assert np.array_equal(np.concatenate(sent), everything)
    assert not coalescer.holds(np.arange(2_000)).any()
    assert coalescer.oldest_ts(0) is None
