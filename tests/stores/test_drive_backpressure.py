"""Given a gateway driving the producer, backpressure holds readings without losing any."""

from __future__ import annotations

import time

import numpy as np

from bench.loadrun import drive
from ingest.producer import Producer
from ingest.synthetic import SyntheticStream
from scheduler.model import Batch
from scheduler.registry import generate_registry
from stores.memory_state import MemoryStateStore


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[float, Batch]] = []

    def publish(self, batch: Batch) -> None:
        self.batches.append((time.time(), batch))


def test_held_readings_are_offered_again_until_taken_while_premium_flows() -> None:
    # Given eu-west closed for its first 0.3 s
    reg = generate_registry(5_000, seed=8)
    store = MemoryStateStore()
    pub = Recorder()
    opened_at = time.time() + 0.3

    def gate() -> np.ndarray:
        return np.array([time.time() < opened_at, False, False])

    producer = Producer(lambda: reg, pub, store, backlog_gate=gate)
    # When 40,000 readings are offered at 100,000 readings/s
    result = drive(producer, SyntheticStream(reg, seed=1), 40_000, 100_000, chunk=2_000)
    # Then every reading was taken in the end, some only after being pushed back
    assert result.accepted == result.offered == 40_000
    assert result.pushed_back > 0
    assert sum(len(b) for _, b in pub.batches) == 40_000
    # And eu-west premium kept flowing while eu-west standard was held
    closed = [b for at, b in pub.batches if at < opened_at and b.region == "eu-west"]
    assert {b.tier for b in closed} == {"premium"}
    assert store.counters()["pushed_back"] == result.pushed_back


class ScriptedProducer:
    """Takes every offered reading except those of regions it is told are closed."""

    def __init__(self, closed: list[bool]) -> None:
        self.closed_regions = np.array(closed)
        #: What ingest refuses; the gate's answer can change between closed() and ingest.
        self.refused = self.closed_regions
        self.offered: list[np.ndarray] = []
        self.taken: list[np.ndarray] = []

    def closed(self) -> np.ndarray:
        return self.closed_regions

    def ingest_columns(self, ids, ts, values, now_ts=None, offered_ts=None):  # type: ignore[no-untyped-def]
        from ingest.producer import IngestResult

        self.offered.append(ids.copy())
        region = (ids % 3).astype(np.intp)
        back = np.flatnonzero(self.refused[region])
        self.taken.append(ids[~self.refused[region]])
        return IngestResult(int(ids.size - back.size), 0, {}, back, region[back])


def _pushed_back(ids: np.ndarray) -> tuple:
    from ingest.producer import IngestResult

    region = (ids % 3).astype(np.intp)
    res = IngestResult(0, 0, {}, np.arange(ids.size), region)
    return res, ids, ids.astype(float), ids.astype(float)[:, None], ids.astype(float)


def test_held_readings_go_back_per_region_oldest_first_closed_regions_untouched() -> None:
    from bench.held_readings import HeldReadings

    # Given readings of three regions (device id % 3) held, oldest first, in two hand-backs
    held = HeldReadings(max_readings=100, offer_readings=4)
    producer = ScriptedProducer([False, True, False])
    for ids in (np.arange(0, 12, dtype=np.uint64), np.arange(12, 24, dtype=np.uint64)):
        res, i, t, v, first = _pushed_back(ids)
        held.hold(res, i, t, v, first, now=0.0)
    assert held.size == 24
    # When offered again while region 1 is closed
    accepted, _ = held.offer_again(producer, now=1.0)
    # Then only open regions' oldest readings were offered, the budget split between them
    assert accepted == 4
    assert producer.offered[-1].tolist() == [0, 3, 2, 5]
    # And when region 1 looks open but refuses what it is offered (its gate closed meanwhile)
    producer.closed_regions = np.array([False, False, False])
    producer.refused = np.array([False, True, False])
    held.offer_again(producer, now=2.0)
    assert producer.offered[-1].tolist() == [6, 1, 8, 11]
    # Then what it handed back goes again ahead of the rest it holds
    producer.refused = producer.closed_regions
    held.offer_again(producer, now=3.0)
    assert producer.offered[-1].tolist() == [9, 1, 14, 17]
    # And every reading comes out exactly once in the end
    producer.closed_regions[:] = [False, False, False]
    while held:
        held.offer_again(producer, now=10.0)
    taken = np.concatenate(producer.taken).tolist()
    assert sorted(taken) == list(range(24))


class _ScreeningProducer:
    """Screens whatever it is handed; takes every reading offered."""

    def __init__(self) -> None:
        self.screened: list[int] = []

    def screen_held(self, ids: np.ndarray, ts: np.ndarray, values: np.ndarray) -> int:
        self.screened.append(int(ids.size))
        return int(ids.size)

    def closed(self) -> None:
        return None

    def ingest_columns(self, ids: np.ndarray, *_: object, **__: object) -> object:
        from ingest.producer import IngestResult

        return IngestResult(int(ids.size), 0, {})


def test_a_gateway_hands_held_readings_to_screening_until_its_loop_budget_is_spent() -> None:
    from bench.loadrun import _Gateway

    # Given a gateway of 4-reading chunks holding 10 of eu-west's standard readings
    reg = generate_registry(1_000, seed=4)
    producer = _ScreeningProducer()
    gateway = _Gateway(producer, None, 100, 4, None, None)  # type: ignore[arg-type]
    ids = reg.device_id[np.flatnonzero((reg.home_region == 0) & (reg.tier == 1))[:20]]
    ts = np.arange(20.0)
    gateway.held.defer_non_premium(reg, ids[:10], ts[:10], ts[:10, None], ts[:10])
    # When its loop's budget is already spent
    gateway.offer_held(20.0, handover_until=time.perf_counter() - 1.0)
    # Then it hands over one chunk only
    assert producer.screened == [4]
    # And with time left in the loop, it hands over the rest in the same call
    gateway.offer_held(20.0, handover_until=time.perf_counter() + 60.0)
    assert producer.screened == [4, 4, 2]
    assert gateway.held.screened == 10


class TakingProducer:
    """Takes every offered reading; records each offer's columns."""

    def __init__(self) -> None:
        self.offers: list[tuple[np.ndarray, ...]] = []

    def closed(self) -> None:
        return None

    def ingest_columns(self, ids, ts, values, now_ts=None, offered_ts=None):  # type: ignore[no-untyped-def]
        from ingest.producer import IngestResult

        self.offers.append((ids, ts, values, offered_ts))
        return IngestResult(int(ids.size), 0, {})


def test_a_gateway_behind_its_schedule_offers_each_regions_readings_again_in_order() -> None:
    from bench.held_readings import HeldReadings

    # Given a gateway behind its schedule deferring two chunks of readings of every region
    # and tier, the devices of all regions interleaved, event times rising
    reg = generate_registry(600, seed=5)
    held = HeldReadings(max_readings=10_000, offer_readings=10_000)
    expected: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for k in range(2):
        ids = reg.device_id[np.random.default_rng(k).permutation(600)]
        ts = k * 1_000.0 + np.arange(600.0)
        rows = reg.lookup(ids)
        for code in expected:
            expected[code] += ts[(reg.home_region[rows] == code) & (reg.tier[rows] > 0)].tolist()
        now_ids, now_ts, _, _ = held.defer_non_premium(reg, ids, ts, ts[:, None], ts)
        # Then premium is offered at once, and only premium
        assert (reg.tier[reg.lookup(now_ids)] == 0).all()
        assert now_ts.tolist() == ts[reg.tier[rows] == 0].tolist()
    # When every region takes them again
    producer = TakingProducer()
    held.offer_again(producer, now=1.0)  # type: ignore[arg-type]
    # Then each region's readings come back once, in the order they came, with their
    # values and first-offer times
    (offer,) = producer.offers
    ids, ts, values, first = offer
    assert held.size == 0 and ts.size == held.deferred == sum(map(len, expected.values()))
    assert values[:, 0].tolist() == ts.tolist() == first.tolist()
    home = reg.home_region[reg.lookup(ids)]
    for code, want in expected.items():
        assert want and ts[home == code].tolist() == want
