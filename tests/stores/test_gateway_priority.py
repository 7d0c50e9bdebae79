"""Given a gateway far behind its devices' schedule, premium goes through first."""

from __future__ import annotations

import numpy as np

from bench.loadrun import drive
from ingest.producer import Producer
from ingest.synthetic import SyntheticStream
from scheduler.batching import BatchingConfig
from scheduler.model import Batch
from scheduler.registry import generate_registry
from stores.memory_state import MemoryStateStore


class Recorder:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def publish(self, batch: Batch) -> None:
        self.batches.append(batch)


class AllDueAtOnce:
    """A schedule offering every reading at its start: a gateway that cannot keep up."""

    def __init__(self, readings: int) -> None:
        self.readings = readings

    def __call__(self, elapsed_s: float) -> float:
        return float(self.readings)

    def offer_instants(self, first: int, n: int) -> np.ndarray:
        return np.zeros(n)


def test_premium_is_published_before_standard_when_the_gateway_is_behind() -> None:
    reg = generate_registry(5_000, seed=9)
    pub = Recorder()
    # (batches of 100 flush on size, so publish order is the order ingest took readings)
    producer = Producer(
        lambda: reg, pub, MemoryStateStore(), batching=BatchingConfig(max_readings=100)
    )
    # When 30,000 readings are all due at once and the gateway takes 2,000 at a time
    result = drive(
        producer, SyntheticStream(reg, seed=2), 30_000, chunk=2_000, pace=AllDueAtOnce(30_000)
    )
    # Then every reading is published, the non-premium ones after being held
    assert result.accepted == result.offered == 30_000
    assert result.deferred > 0
    assert sum(len(b) for b in pub.batches) == 30_000
    # And the first batches out are premium: (about) all the premium of the first 20,000
    # due readings goes out before any standard one
    total_premium = sum(len(b) for b in pub.batches if b.tier == "premium")
    first_standard = next(i for i, b in enumerate(pub.batches) if b.tier != "premium")
    premium_first = sum(len(b) for b in pub.batches[:first_standard])
    assert premium_first >= 0.9 * total_premium * 20_000 / 30_000
    # And every reading's latency starts at its scheduled offer, not when it was taken
    started = min(float(b.ingest_ts.min()) for b in pub.batches)
    assert all(float(b.ingest_ts.max()) == started for b in pub.batches)


def test_a_region_with_held_readings_takes_its_new_readings_after_them() -> None:
    from bench.held_readings import HeldReadings

    reg = generate_registry(2_000, seed=4)
    held = HeldReadings(max_readings=100_000)
    stream = SyntheticStream(reg, seed=1)
    # Given a gateway holding older standard readings of one region (pushed back)
    old_ids, old_ts, old_values = stream.chunk(2_000, 1_000.0)
    rows = reg.lookup(old_ids)
    region = int(reg.home_region[rows[0]])
    older = (reg.home_region[rows] == region) & (reg.tier[rows] > 0)
    first = np.full(int(older.sum()), 1_000.0)
    held.defer_non_premium(reg, old_ids[older], old_ts[older], old_values[older], first)
    # When new readings arrive for every region
    new_ids, new_ts, new_values = stream.chunk(2_000, 1_001.0)
    ids, _ts, _v, _f = held.queue_behind_held(
        reg, new_ids, new_ts, new_values, np.full(2_000, 1_001.0)
    )
    # Then that region's new non-premium readings wait behind its held ones, while its
    # premium and the other regions' readings are offered now
    out_rows = reg.lookup(ids)
    same_region = reg.home_region[out_rows] == region
    assert not np.any(same_region & (reg.tier[out_rows] > 0))
    assert np.any(same_region & (reg.tier[out_rows] == 0))
    assert np.any(~same_region)
    new_rows = reg.lookup(new_ids)
    queued = (reg.home_region[new_rows] == region) & (reg.tier[new_rows] > 0)
    assert held.size == int(older.sum()) + int(queued.sum())


def test_a_gateway_knows_how_long_ago_its_next_reading_was_due() -> None:
    from bench.loadrun import SteadyPace, _Gateway

    reg = generate_registry(1_000, seed=5)
    producer = Producer(lambda: reg, Recorder(), MemoryStateStore())
    stream = SyntheticStream(reg, seed=3)
    # Given a gateway due to offer 1,000 readings a second, none offered yet
    paced = _Gateway(producer, stream, 5_000, 500, SteadyPace(1_000.0), None)
    # Then 0.3 s in it is 0.3 s behind (its first reading was due at the start)
    assert abs(paced.lag_s(paced.started + 0.3) - 0.3) < 1e-6
    # And once it offered 500 readings (due until 0.5 s), at 0.6 s it is 0.1 s behind,
    # and ahead of the schedule it is not behind at all
    paced.offered = 500
    assert abs(paced.lag_s(paced.started + 0.6) - 0.1) < 1e-6
    assert paced.lag_s(paced.started + 0.2) == 0.0
    # And an unpaced gateway is never behind a schedule
    unpaced = _Gateway(producer, stream, 5_000, 500, None, None)
    assert unpaced.lag_s(unpaced.started + 10.0) == 0.0
