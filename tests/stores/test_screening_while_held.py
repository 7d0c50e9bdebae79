"""Given admission control pushing readings back, they are screened at once, and once."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import fakeredis
import numpy as np
import pytest
from runtime_doubles import MakeRuntime

from bench.held_readings import HeldReadings
from bench.loadrun import drive
from bench.window import OfferWindow
from ingest.celery_publisher import CeleryPublisher
from ingest.producer import IngestResult, Producer
from scheduler.codec import decode_batch
from scheduler.held_screening import MAX_CREDIT_WAIT_S, PER_UNSCREENED, HeldScreenBudget
from scheduler.latency import percentile_ms
from scheduler.model import Batch
from scheduler.registry import Registry, generate_registry
from scheduler.wire import HELD_SCREEN_FIELD, ROUTINE_TASK, SCREEN_TASK
from stores.keys import Keys
from stores.memory_state import MemoryStateStore
from tasks.screen import handle_screen


class RecordingApp:
    """Stands in for the Celery app: keeps (task, queue, batch) in send order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Batch]] = []

    def send_task(self, name: str, args: tuple[Any, ...], queue: str, **_: Any) -> None:
        self.sent.append((name, queue, decode_batch(args[0])))

    def producer_or_acquire(self) -> Any:
        """No broker to pipeline to: a producer whose publish batch does nothing."""
        return contextlib.nullcontext(SimpleNamespace(batch=lambda size: contextlib.nullcontext()))

    def readings(self, task: str) -> list[tuple[int, float]]:
        return [
            (int(d), float(t))
            for name, _, b in self.sent
            if name == task
            for d, t in zip(b.device_id, b.ts, strict=True)
        ]


class RoundRobin:
    """Every device in turn, one reading each per round, event times rising per device."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._next = 0

    def chunk(self, n: int, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i = (self._next + np.arange(n)) % len(self.registry)
        self._next += n
        ts = now - 1.0 + np.arange(n) * 1e-7
        return self.registry.device_id[i], ts, np.zeros((n, 1))


def _producer(gate: Any, app: RecordingApp, per_admitted: float = 10.0) -> Producer:
    reg = generate_registry(2_000, seed=3)
    publisher = CeleryPublisher(app, screening=True)  # type: ignore[arg-type]
    budget = HeldScreenBudget(per_admitted=per_admitted)
    return Producer(
        lambda: reg, publisher, MemoryStateStore(), backlog_gate=gate, held_screening=budget
    )


def closed_between(start: float, from_s: float, until_s: float) -> Callable[[], np.ndarray]:
    """A backlog gate with every region (of three) closed to non-premium tiers from
    ``from_s`` to ``until_s`` after ``start``, open otherwise."""

    def gate() -> np.ndarray:
        return np.full(3, from_s < time.time() - start < until_s)

    return gate


def test_pushed_back_readings_are_screened_at_once_and_not_again_when_admitted() -> None:
    # Given every region open for the first 0.2 s of a run, then closed to other tiers
    # than premium for 0.4 s, then open again
    app = RecordingApp()
    start = time.time()
    producer = _producer(closed_between(start, 0.2, 0.6), app)
    stream = RoundRobin(producer._registry())
    # When 60,000 readings are offered at 60,000 readings/s through the gateway
    result = drive(producer, stream, 60_000, 60_000, chunk=2_000)  # type: ignore[arg-type]
    # Then every reading was processed once, some only after being held
    assert result.accepted == 60_000 and result.pushed_back + result.deferred > 0
    routine = app.readings(ROUTINE_TASK)
    assert len(routine) == len(set(routine)) == 60_000
    # And no reading was screened twice, though held ones were offered again
    screened = app.readings(SCREEN_TASK)
    assert len(screened) == len(set(screened))
    assert producer.store.counters()["screened_while_held"] > 0
    # And each device's readings reached screening in time order (a copy is screened in
    # time order within itself; a later copy must hold only newer readings)
    newest: dict[int, float] = {}
    for name, _, copy in app.sent:
        if name == SCREEN_TASK:
            pairs = list(zip(copy.device_id.tolist(), copy.ts.tolist(), strict=True))
            assert all(t > newest.get(d, -np.inf) for d, t in pairs)
            for d, t in pairs:
                newest[d] = max(newest.get(d, t), t)


def test_a_paced_bench_window_leaves_screening_of_held_readings_on() -> None:
    # Given the pattern bench's window recording what the producer publishes, and every
    # region closed to other tiers than premium from 0.2 s to 0.6 s into the run
    app = RecordingApp()
    start = time.time()
    producer = _producer(closed_between(start, 0.2, 0.6), app)
    stream = RoundRobin(producer._registry())
    run_ = SimpleNamespace(store=SimpleNamespace(client=fakeredis.FakeRedis()), keys=Keys("w"))
    window = OfferWindow(run_, start + 0.2, start + 0.6).install(producer, stream)
    # When 60,000 readings are offered at 60,000 readings/s through the gateway
    result = drive(producer, stream, 60_000, 60_000, chunk=2_000)  # type: ignore[arg-type]
    window.report(timeout_s=5.0)
    # Then readings held back were screened while held, through the recording publisher
    assert result.pushed_back + result.deferred > 0
    held_copies = [b for name, _, b in app.sent if name == SCREEN_TASK and "held" in b.batch_id]
    assert held_copies and producer.store.counters()["screened_while_held"] > 0
    # And still once each
    screened = app.readings(SCREEN_TASK)
    assert len(screened) == len(set(screened)) == 60_000


def test_held_readings_are_screened_before_any_is_admitted() -> None:
    # Given eu-west (and every region) closed to other tiers than premium, after some
    # standard readings were admitted (which earns the budget)
    app = RecordingApp()
    closed = [False]
    producer = _producer(lambda: np.full(3, closed[0]), app)
    reg = producer._registry()
    standard = np.flatnonzero(reg.tier == 1)[:500]
    ids = reg.device_id[standard]
    now = time.time()
    producer.ingest_columns(ids, np.full(500, now - 2), np.zeros(500), now_ts=now)
    producer.flush()
    app.sent.clear()
    closed[0] = True
    # When newer readings of the same devices are pushed back
    res = producer.ingest_columns(ids, np.full(500, now - 1), np.ones(500), now_ts=now)
    producer.flush()
    # Then they were all handed back, and all screened already, before any admission
    assert res.pushed_back == 500 and res.screened_while_held == 500
    assert len(app.readings(SCREEN_TASK)) == 500 and not app.readings(ROUTINE_TASK)
    # When they are offered again once the region opens
    closed[0] = False
    app.sent.clear()
    again = producer.ingest_columns(ids, np.full(500, now - 1), np.ones(500), now_ts=now + 1)
    producer.flush()
    # Then they go to routine processing only
    assert again.accepted == 500
    assert len(app.readings(ROUTINE_TASK)) == 500 and not app.readings(SCREEN_TASK)


def test_past_its_budget_a_sample_of_whole_devices_is_screened_while_held() -> None:
    # Given a closed region whose held screening spent twice what it earned
    app = RecordingApp()
    closed = [False]
    producer = _producer(lambda: np.full(3, closed[0]), app, per_admitted=0.5)
    reg = producer._registry()
    standard = np.flatnonzero((reg.tier == 1) & (reg.home_region == 0))[:300]
    ids = reg.device_id[standard]
    now = time.time()
    # (admitted a window before, so the budget judges on evidence; readings admitted
    # unscreened earn 0.5 each, and PER_UNSCREENED more for their screening copies: as
    # many as 300 would earn at 0.45 each, under half what 300 held ones take on 3 s
    # later, so more of those wait for credit than the window earned)
    admitted = round(300 * 0.45 / (0.5 + PER_UNSCREENED))
    producer.ingest_columns(
        ids[:admitted], np.full(admitted, now - 9), np.zeros(admitted), now_ts=now - 3
    )
    producer.flush()
    closed[0] = True
    producer.ingest_columns(ids, np.full(300, now - 8), np.zeros(300), now_ts=now)
    # (no device is dropped before a reading has waited for credit past the bound: the
    # drain may come back in time to pay for it)
    assert producer.held_screener.budget.share(0) == 1.0
    # (and the region admits other devices' readings a tenth of a second after they are
    # offered, 0.3 s later: a device dropped from the sample would be screened sooner at
    # admission than the held readings get credit)
    closed[0] = False
    others = reg.device_id[np.flatnonzero((reg.tier == 1) & (reg.home_region == 0))[300:305]]
    offered = np.full(5, now + 0.2)
    producer.ingest_columns(
        others, np.full(5, now - 8), np.zeros(5), now_ts=now + 0.3, offered_ts=offered
    )
    closed[0] = True
    later = now + MAX_CREDIT_WAIT_S + 0.1
    producer.ingest_columns(ids, np.full(300, now - 7), np.zeros(300), now_ts=later)
    producer.flush()
    assert 0.5 <= producer.held_screener.budget.share(0) < 0.6
    app.sent.clear()
    # When three newer readings per device are pushed back
    ids3, ts = np.tile(ids, 3), np.repeat(now - np.array([3.0, 2.0, 1.0]), 300)
    res = producer.ingest_columns(ids3, ts, np.zeros(900), now_ts=later + 0.1)
    producer.flush()
    # Then about half the devices were screened at once, each with all three readings
    early = app.readings(SCREEN_TASK)
    devices, counts = np.unique([d for d, _ in early], return_counts=True)
    assert res.screened_while_held == len(early) and 100 <= devices.size <= 200
    assert set(counts.tolist()) == {3}
    # When the region opens and the readings are offered again
    closed[0] = False
    app.sent.clear()
    producer.ingest_columns(ids3, ts, np.zeros(900), now_ts=later + 1)
    producer.flush()
    # Then the other devices' readings are screened now, and none twice
    late = app.readings(SCREEN_TASK)
    assert len(late) + len(early) == 900 and not set(late) & set(early)
    assert len(app.readings(ROUTINE_TASK)) == 900


def test_a_gateway_screens_the_readings_it_holds_itself() -> None:
    # Given a gateway holding readings for eu-west, and a screening callback
    reg = generate_registry(1_000, seed=4)
    seen: list[np.ndarray] = []

    def screen(ids: np.ndarray, ts: np.ndarray, values: np.ndarray) -> int:
        seen.append(ids)
        return int(ids.size)

    held = HeldReadings(10_000, screen=screen)
    eu = np.flatnonzero((reg.home_region == 0) & (reg.tier == 1))[:10]
    ids = reg.device_id[eu]
    back = IngestResult(0, 0, {}, np.arange(10), np.zeros(10, dtype=np.intp))
    held.hold(back, ids, ids.astype(float), ids.astype(float)[:, None], ids.astype(float), 0.0)
    # When new eu-west readings of other tiers than premium queue behind them
    rest = held.queue_behind_held(reg, ids, ids + 1.0, ids.astype(float)[:, None], ids + 1.0)
    # Then the gateway holds them, and screens them once what came beside them is in
    assert rest[0].size == 0 and not seen
    assert held.screen_waiting() == 10
    assert [s.tolist() for s in seen] == [ids.tolist()] and held.screened == 10


def test_a_gateway_screens_what_it_holds_a_chunk_at_a_time_before_offering_again() -> None:
    # Given a gateway offering 4 readings at a time, holding 10 of eu-west's to screen
    reg = generate_registry(1_000, seed=4)
    seen: list[int] = []

    screened_ts: list[float] = []

    def screen(ids: np.ndarray, ts: np.ndarray, values: np.ndarray) -> int:
        seen.append(int(ids.size))
        screened_ts.extend(ts.tolist())
        return int(ids.size)

    held = HeldReadings(10_000, offer_readings=4, screen=screen)
    eu = np.flatnonzero((reg.home_region == 0) & (reg.tier == 1))[:10]
    ids = reg.device_id[eu]
    ts = 100.0 - np.arange(10.0)  # newest first, as a gateway may hold them
    held.defer_non_premium(reg, ids, ts, ids.astype(float)[:, None], ts)
    # When the gateway offers held readings again while some wait to be screened
    offered = held.offer_again(None, now=10.0)  # type: ignore[arg-type]
    # Then none is offered yet (admitted unscreened, it would be screened twice)
    assert offered == (0, 0)
    # And they are screened four at a time
    assert [held.screen_waiting() for _ in range(4)] == [4, 4, 2, 0]
    assert seen == [4, 4, 2]
    # And oldest first, so no older reading comes after a newer one of its device
    assert screened_ts == sorted(screened_ts)


def test_a_gateway_counts_how_long_what_it_held_waited_before_screening() -> None:
    # Given a gateway handing 4 readings a loop to screening, holding 8 of eu-west's
    # taken from their devices at t = 100 s
    reg = generate_registry(1_000, seed=4)
    held = HeldReadings(10_000, offer_readings=4, screen=lambda ids, ts, values: int(ids.size))
    eu = reg.device_id[np.flatnonzero((reg.home_region == 0) & (reg.tier == 1))[:8]]
    ts = np.full(8, 100.0)
    held.defer_non_premium(reg, eu, ts, ts[:, None], ts)
    # When it hands four over at t = 101 s and the other four only at t = 103 s
    held.screen_waiting(now=101.0)
    held.screen_waiting(now=103.0)
    # Then its hand-over wait shows half the readings waited 1 s and half 3 s
    wait = held.handover_wait_ms
    assert sum(wait.values()) == 8
    assert percentile_ms(wait, 50) == pytest.approx(1000.0, rel=0.05)
    assert percentile_ms(wait, 99) == pytest.approx(3000.0, rel=0.05)


class _TakingProducer:
    """Takes every reading offered; records the event times of each offer."""

    def __init__(self) -> None:
        self.offers: list[list[float]] = []

    def closed(self) -> None:
        return None

    def ingest_columns(self, ids: Any, ts: Any, values: Any, **_: Any) -> IngestResult:
        self.offers.append(np.asarray(ts).tolist())
        return IngestResult(int(np.asarray(ids).size), 0, {})


def test_a_gateway_offers_again_what_it_screened_while_newer_readings_wait_their_turn() -> None:
    # Given a gateway offering 4 readings at a time, holding 6 of eu-west's, all screened
    reg = generate_registry(1_000, seed=4)
    held = HeldReadings(10_000, offer_readings=4, screen=lambda ids, ts, values: int(ids.size))
    eu = reg.device_id[np.flatnonzero((reg.home_region == 0) & (reg.tier == 1))[:12]]
    old = np.arange(6.0)
    held.defer_non_premium(reg, eu[:6], old, old[:, None], old)
    assert held.screen_waiting() == 4 and held.screen_waiting() == 2
    # When 6 newer ones are held behind them, not yet handed to screening
    new = 10.0 + np.arange(6.0)
    held.defer_non_premium(reg, eu[6:], new, new[:, None], new)
    producer = _TakingProducer()
    held.offer_again(producer, now=10.0)  # type: ignore[arg-type]
    # Then the screened ones are offered again, oldest first, without waiting for those
    assert producer.offers == [[0.0, 1.0, 2.0, 3.0]]
    held.offer_again(producer, now=10.0)  # type: ignore[arg-type]
    assert producer.offers[-1] == [4.0, 5.0]
    # And none of the newer ones is offered before it was handed to screening
    assert held.offer_again(producer, now=10.0) == (0, 0)  # type: ignore[arg-type]
    assert held.screen_waiting() == 4
    held.offer_again(producer, now=10.0)  # type: ignore[arg-type]
    assert producer.offers[-1] == [10.0, 11.0, 12.0, 13.0]


def test_held_copies_travel_apart_in_order_and_do_not_advance_the_frontier(
    make_runtime: MakeRuntime, recording_app: Any
) -> None:
    # Given a publisher coalescing an admitted copy, then a held one, then an admitted one
    rt = make_runtime(fakeredis.FakeRedis())
    rt.stores.state.save_registry(generate_registry(100, seed=3))  # screening reads its groups
    publisher = CeleryPublisher(recording_app, screening=True, publisher=rt.publisher)
    now = time.time()

    def standard(i: int, ts: float) -> Batch:
        ids = np.arange(1, 11, dtype=np.uint64)
        return Batch(f"p:eu-west:standard:{i}", "eu-west", "standard", ("value",), ids,
                     np.full(10, ts), np.zeros((10, 1)), np.full(10, now))  # fmt: skip

    publisher.publish(standard(1, now - 3))
    publisher.screen_many([standard(2, now - 2)])
    publisher.publish(standard(3, now - 1))
    publisher.flush()
    # Then three screening messages went to eu-west.screen, in order, the held one marked
    copies = recording_app.named(SCREEN_TASK)
    assert [(p[0]["id"], p[0].get(HELD_SCREEN_FIELD, False)) for p in copies] == [
        ("p:eu-west:standard:1+1", False),
        ("p:eu-west:standard:2.0+1", True),
        ("p:eu-west:standard:3+1", False),
    ]
    # When the held copy is screened alone
    handle_screen(rt, copies[1][0])
    # Then the stream's frontier did not move: it vouches only for what every device sent
    assert rt.stores.detector.frontier("eu-west") == {}
    # When the admitted copies are screened
    handle_screen(rt, copies[0][0])
    handle_screen(rt, copies[2][0])
    # Then the frontier is their newest reading
    assert rt.stores.detector.frontier("eu-west") == {"standard": now - 1}


def test_a_large_held_copy_is_screened_in_pieces_no_larger_than_the_held_copy_limit(
    recording_app: Any,
) -> None:
    # Given 12,000 held readings of one region handed over at once, held copies of 5,000
    publisher = CeleryPublisher(
        recording_app, screening=True, screen_max_readings=1_000, held_screen_max_readings=5_000
    )
    n = 12_000
    held = Batch("p:eu-west:standard:held1", "eu-west", "standard", ("value",),
                 np.arange(n, dtype=np.uint64), np.arange(n, dtype=np.float64),
                 np.zeros((n, 1)), np.zeros(n))  # fmt: skip
    # When they are screened
    publisher.screen_many([held])
    publisher.flush()
    # Then they go as messages of at most the held copy limit, each once, in order
    copies = [p[0] for p in recording_app.named(SCREEN_TASK)]
    assert [c["n"] for c in copies] == [5_000, 5_000, 2_000]
    assert len({c["id"] for c in copies}) == 3


class SetShare(HeldScreenBudget):
    """A budget whose sample share the test sets (the budget's own sizing is tested in
    tests/core/test_held_screening.py)."""

    set_to = 1.0

    def share(self, region: int) -> float:
        return self.set_to


def test_a_device_dropped_from_the_sample_rejoins_once_its_older_held_readings_are_in() -> None:
    # Given eu-west closed to other tiers than premium and half its devices in the sample
    app = RecordingApp()
    reg = generate_registry(2_000, seed=3)
    budget = SetShare()
    closed = [True]
    producer = Producer(
        lambda: reg,
        CeleryPublisher(app, screening=True),  # type: ignore[arg-type]
        MemoryStateStore(),
        backlog_gate=lambda: np.full(3, closed[0]),
        held_screening=budget,
    )
    ids = reg.device_id[(reg.tier == 1) & (reg.home_region == 0)][:300]
    now = time.time()

    def offer(ages_s: list[float]) -> IngestResult:
        ts = np.repeat(now - np.array(ages_s), ids.size)
        res = producer.ingest_columns(np.tile(ids, len(ages_s)), ts, np.zeros(ts.size), now_ts=now)
        producer.flush()
        return res

    budget.set_to = 0.5
    offer([9.0, 8.0, 7.0])
    early = {d for d, _ in app.readings(SCREEN_TASK)}
    dropped = set(ids.tolist()) - early
    assert 100 <= len(early) <= 200
    # When the sample grows back to every device while the overload lasts
    budget.set_to = 1.0
    app.sent.clear()
    res = offer([6.0, 5.0])
    # Then the devices in the sample all along are screened at once, and the dropped
    # ones keep their newer readings back (their older ones still wait unscreened)
    assert {d for d, _ in app.readings(SCREEN_TASK)} == early
    assert res.pushed_back == 600 and res.screened_while_held == 2 * len(early)
    # When the region opens and the oldest readings are admitted
    closed[0] = False
    app.sent.clear()
    offer([9.0, 8.0, 7.0])
    # Then the dropped devices' oldest readings are screened with their routine batches,
    # and right after them the readings they kept back, oldest first: they rejoined
    screened = app.readings(SCREEN_TASK)
    assert sorted(screened) == sorted((d, now - a) for d in dropped for a in (9, 8, 7, 6, 5))
    last: dict[int, float] = {}
    for d, t in screened:
        assert t > last.get(d, -np.inf)
        last[d] = t
    # When the kept readings are admitted too
    app.sent.clear()
    offer([6.0, 5.0])
    # Then they are not screened again
    assert not app.readings(SCREEN_TASK) and len(app.readings(ROUTINE_TASK)) == 600
    # And, closed again, every device is screened at once while held
    closed[0] = True
    app.sent.clear()
    offer([4.0])
    assert {d for d, _ in app.readings(SCREEN_TASK)} == set(ids.tolist())


def test_a_region_whose_sample_shrank_to_nothing_grows_it_back_as_admissions_earn() -> None:
    # Given eu-west closed, and a budget that has shrunk its sample to nothing
    app = RecordingApp()
    closed = [True]
    producer = _producer(lambda: np.full(3, closed[0]), app, per_admitted=1.0)
    budget = producer.held_screener.budget
    base = time.time() - 100.0
    budget.earn(0, 1, now_ts=base)
    for step in range(1, 40):
        budget.spend(0, 10_000, now_ts=base + step)
    assert budget.share(0) < 1e-6
    reg = producer._registry()
    ids = reg.device_id[(reg.tier == 1) & (reg.home_region == 0)][:300]
    # When, for ten seconds, admissions earn while held readings screen nothing
    for step in range(40, 50):
        now = base + step
        budget.earn(0, 100_000, now_ts=now)
        res = producer.ingest_columns(ids, np.full(300, now - 0.5), np.zeros(300), now_ts=now)
        assert res.pushed_back == 300
    # Then the sample has grown back, and its devices (whose older readings wait held
    # unscreened) rejoin it: their newer held readings are kept to be screened
    assert budget.share(0) >= 0.3
    now = base + 50.5
    producer.ingest_columns(ids, np.full(300, now - 0.1), np.zeros(300), now_ts=now)
    assert producer.held_screener.rejoin.size > 0


def test_readings_admitted_tell_the_budget_how_long_their_region_took_to_admit_them() -> None:
    # Given a producer whose regions are all open
    app = RecordingApp()
    producer = _producer(lambda: np.zeros(3, dtype=np.bool_), app)
    reg = producer._registry()
    budget = producer.held_screener.budget
    later = np.flatnonzero(reg.tier > 0)[:200]
    now = time.time()
    ids, ts = reg.device_id[later], np.full(later.size, now - 1.0)
    # When readings of the other tiers first offered 7 s ago (pushed back since) are admitted
    offered = np.full(later.size, now - 7.0)
    offered[0] = now - 9.0
    res = producer.ingest_columns(ids, ts, np.zeros((later.size, 1)), now, offered_ts=offered)
    assert res.accepted == later.size
    # Then each region that admitted some knows its readings waited up to 9 s to be admitted
    regions = np.unique(reg.home_region[later]).tolist()
    first = int(reg.home_region[later[0]])
    assert budget.admission_lag_s(first, now) == pytest.approx(9.0)
    assert all(
        budget.admission_lag_s(code, now) == pytest.approx(7.0) for code in regions if code != first
    )
