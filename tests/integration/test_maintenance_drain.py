"""A booked maintenance window shrinks a real worker's data pool ahead of its start, and
the slots return after it (real redis-server, real ``celery worker --autoscale``).

The test plays the maintenance tick's publishing role: every 0.1 s it writes the
region's pre-drain level through ``ReservationStore.update`` (as
``tasks.maintenance.plan_tick`` does, with a 2 s lead instead of 30 s) without
dispatching the operation, so no maintenance worker is needed and the window
is not rebooked when it ends unrun. Scaled down: budget 4 slots, a 2-slot
window 4 s ahead lasting 3 s, a 0.1 s autoscaler refresh.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from bench.scale import make_batch
from scheduler.codec import encode_batch
from scheduler.maintenance import drain_slots
from scheduler.model import queue_name
from scheduler.settings import Settings
from stores.keys import Keys
from stores.queue_depth import QueueDepthReader
from stores.redis_state import RedisStateStore
from stores.reservation_store import BookState, ReservationStore
from tasks.app import broker_app
from tasks.routine import ROUTINE_TASK
from workers.supervisor import FleetConfig, Supervisor

pytestmark = pytest.mark.integration

REGION = "eu-west"
BUDGET_SLOTS = 4
WINDOW_SLOTS = 2
LEAD_S = 2.0
ENV = {
    "IOTSCHED_REGIONS": REGION,
    "IOTSCHED_REGION_BUDGET_SLOTS": str(BUDGET_SLOTS),
    "IOTSCHED_AUTOSCALE_REFRESH_S": "0.1",
    "IOTSCHED_SCALE_DOWN_WINDOW_S": "2",
    # A short drain target: a few hundred queued batches ask for the whole budget.
    "IOTSCHED_DRAIN_TARGET_S": "0.1",
}
FLEET = FleetConfig(
    regions=(REGION,), max_slots=BUDGET_SLOTS, min_slots=1, max_replicas=1, env_extra=ENV
)
#: Queued messages kept on the standard queue so demand exceeds the budget throughout.
BACKLOG = 150


class Region:
    def __init__(self, redis_url: str, prefix: str) -> None:
        self.keys = Keys(prefix)
        self.client = redis.Redis.from_url(redis_url)
        self.store = RedisStateStore(self.client, self.keys)
        self.book = ReservationStore(self.client, self.keys, {REGION: BUDGET_SLOTS}, {REGION: 0})
        self.app = broker_app(redis_url, self.keys)
        settings = Settings(redis_url=redis_url, key_prefix=prefix, regions=(REGION,))
        self.sup = Supervisor(settings, FLEET, self.app, self.client)
        self.reader = QueueDepthReader(self.client, self.keys)
        self.rng = np.random.default_rng(11)
        self.queue = queue_name(REGION, "standard")

    def top_up(self) -> None:
        """Keep about BACKLOG batches waiting: sustained demand above the budget."""
        waiting = self.reader.sample([self.queue]).depth.get(self.queue, 0)
        for _ in range(max(0, BACKLOG - waiting)):
            batch = make_batch(REGION, "standard", 2_000, self.rng)
            self.app.send_task(
                ROUTINE_TASK, args=(encode_batch(batch),), queue=self.queue, serializer="msgpack"
            )

    def publish_drain_level(self) -> int:
        def change(s: BookState) -> int:
            s.drain_slots[REGION] = drain_slots(time.time(), s.book, REGION, LEAD_S)
            return s.drain_slots[REGION]

        return self.book.update(change)

    def close(self) -> None:
        self.sup.stop()
        self.app.close()
        self.store.delete_all()
        self.client.delete(self.keys.reservations, self.keys.maintenance_runs,
                           self.keys.maintenance_drain, self.keys.maintenance_events)  # fmt: skip


@pytest.fixture
def region(redis_server: str, key_prefix: str) -> Iterator[Region]:
    r = Region(redis_server, key_prefix)
    try:
        yield r
    finally:
        r.close()


def test_a_booked_window_shrinks_the_data_pool_before_it_starts_and_returns_the_slots_after(
    region: Region,
) -> None:
    # Given one data worker (--autoscale 4,1) grown to the region budget by a sustained backlog
    worker = region.sup.start_worker(REGION)
    slots: list[tuple[float, int, int]] = []  # (ts, pool slots, published drain level)

    def step() -> int:
        region.top_up()
        level = region.publish_drain_level()
        beat = region.sup.heartbeats.read().get(worker.node)
        if beat is not None:
            slots.append((time.time(), beat.slots, level))
        time.sleep(0.1)
        return beat.slots if beat is not None else 0

    deadline = time.monotonic() + 20
    while step() < BUDGET_SLOTS:
        assert time.monotonic() < deadline, f"pool never reached the budget: {slots[-5:]}"
    # When a 2-slot window is booked to start in 4 s, for 3 s
    start_ts = time.time() + 4.0
    window = region.book.book(REGION, start_ts, 3.0, WINDOW_SLOTS, "trim_streams", time.time())
    end_ts = window.start_ts + window.duration_s
    while time.time() < end_ts + 3.0:
        step()
    # Then the pool had given up the window's slots before it started ...
    # (the last look before the start; on a loaded CI a sampling step can take over 0.5 s)
    before = [n for ts, n, _ in slots if start_ts - LEAD_S <= ts < start_ts]
    assert before and before[-1] <= BUDGET_SLOTS - WINDOW_SLOTS, slots
    # ... it never used them while the window was open ...
    during = [n for ts, n, _ in slots if start_ts <= ts < end_ts]
    assert during and max(during) <= BUDGET_SLOTS - WINDOW_SLOTS, slots
    # ... and took them back after the window ended, the backlog still waiting
    after = [n for ts, n, _ in slots if ts >= end_ts + 1.0]
    assert after and after[-1] == BUDGET_SLOTS, slots
    # And the level it followed was published from the book: 2 from 2 s ahead until the end
    assert {lvl for ts, _, lvl in slots if start_ts - LEAD_S + 0.3 <= ts < end_ts} == {2}
