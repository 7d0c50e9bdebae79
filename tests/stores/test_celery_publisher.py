"""Given routine batches, the publisher sends each to its queue and coalesces screening copies."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any

import numpy as np

from ingest.celery_publisher import CeleryPublisher
from scheduler.codec import decode_batch
from scheduler.model import Batch


class FakeApp:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Batch]] = []

    def send_task(
        self,
        name: str,
        args: tuple[Any, ...],
        queue: str,
        serializer: str,
        argsrepr: str,
        retry: bool = True,
        producer: Any = None,
    ) -> None:
        assert serializer == "msgpack" and argsrepr.startswith("<batch ")
        self.sent.append((name, queue, decode_batch(args[0])))

    def producer_or_acquire(self) -> Any:
        """No broker to pipeline to: a producer whose publish batch does nothing."""
        return contextlib.nullcontext(SimpleNamespace(batch=lambda size: contextlib.nullcontext()))


def batch(i: int, region: str, tier: str, n: int) -> Batch:
    return Batch(
        f"p:{region}:{tier}:{i}",
        region,
        tier,
        ("value",),
        np.arange(n, dtype=np.uint64),
        np.zeros(n),
        np.zeros((n, 1)),
        np.zeros(n),
    )


def screen_copies(app: FakeApp) -> list[tuple[str, Batch]]:
    """The screening copies sent so far, as (queue, batch) in send order."""
    return [(q, b) for name, q, b in app.sent if name == "iotsched.screen"]


def test_screening_copies_are_coalesced_per_region_and_sent_on_age() -> None:
    now = [100.0]
    app = FakeApp()
    pub = CeleryPublisher(app, screening=True, screen_max_age_ms=100, clock=lambda: now[0])  # type: ignore[arg-type]
    # Given four small routine batches of two regions within 100 ms
    for i, (region, tier) in enumerate(
        [
            ("eu-west", "premium"),
            ("eu-west", "standard"),
            ("us-east", "premium"),
            ("eu-west", "premium"),
        ]
    ):
        pub.publish(batch(i, region, tier, 10))
    # Then each went at once to its routine queue, and no screening copy yet
    assert [q for _, q, _ in app.sent] == [
        "eu-west.premium",
        "eu-west.standard",
        "us-east.premium",
        "eu-west.premium",
    ]
    # When more than 100 ms pass
    now[0] += 0.15
    pub.poll()
    screens = screen_copies(app)
    # Then one screening copy per region and screening queue holds those readings:
    # premium's on screen_premium (ahead of premium), the others' on screen (below it)
    assert sorted((q, len(b)) for q, b in screens) == [
        ("eu-west.screen", 10),
        ("eu-west.screen_premium", 20),
        ("us-east.screen_premium", 10),
    ]
    assert len({b.batch_id for _, b in screens}) == 3


def test_a_full_screening_copy_goes_at_once_and_flush_sends_the_rest() -> None:
    app = FakeApp()
    pub = CeleryPublisher(app, screening=True, screen_max_readings=100, clock=lambda: 0.0)  # type: ignore[arg-type]
    pub.publish(batch(1, "ap-south", "standard", 60))
    pub.publish(batch(2, "ap-south", "standard", 60))
    pub.publish(batch(3, "ap-south", "premium", 5))
    assert [len(b) for _, b in screen_copies(app)] == [120]
    pub.flush()
    sent = [(q, len(b)) for q, b in screen_copies(app)]
    assert sent == [("ap-south.screen", 120), ("ap-south.screen_premium", 5)]


def test_without_screening_only_routine_tasks_are_sent() -> None:
    app = FakeApp()
    pub = CeleryPublisher(app, screening=False)  # type: ignore[arg-type]
    pub.publish(batch(1, "eu-west", "premium", 3))
    pub.flush()
    assert [(n, q) for n, q, _ in app.sent] == [("iotsched.routine", "eu-west.premium")]


def held_batch(i: int, region: str, n: int) -> Batch:
    b = batch(i, region, "standard", n)
    b.batch_id = f"p:{region}:standard:held{i}"
    return b


def held_and_admitted_publisher(
    now: list[float], **size_limits: int
) -> tuple[FakeApp, CeleryPublisher]:
    """A screening publisher on a fake app and the hand-moved clock ``now[0]`` (seconds):
    admitted copies wait at most 100 ms and held ones 500 ms; ``size_limits`` as named
    in ``CeleryPublisher`` (the defaults otherwise)."""
    app = FakeApp()
    pub = CeleryPublisher(  # type: ignore[arg-type]
        app,
        screening=True,
        screen_max_age_ms=100,
        held_screen_max_age_ms=500,
        clock=lambda: now[0],
        **size_limits,
    )
    return app, pub


def test_held_copies_are_coalesced_longer_and_larger_than_admitted_ones() -> None:
    now = [100.0]
    app, pub = held_and_admitted_publisher(
        now, screen_max_readings=100, held_screen_max_readings=1_000
    )
    # Given held readings of one region handed over in three lumps of 150
    for i in range(3):
        pub.screen_many([held_batch(i, "eu-west", 150)])
    # Then none is sent on an admitted copy's size or age limit
    now[0] += 0.2
    pub.poll()
    assert screen_copies(app) == []
    # When the held age limit passes, they go as one copy (one state fetch per device)
    now[0] += 0.4
    pub.poll()
    assert [(q, len(b)) for q, b in screen_copies(app)] == [("eu-west.screen", 450)]


def test_an_admitted_copy_behind_held_ones_keeps_its_age_limit_and_their_order() -> None:
    now = [100.0]
    app, pub = held_and_admitted_publisher(now)
    # Given held readings, then an admitted routine batch of the same region
    pub.screen_many([held_batch(1, "us-east", 30)])
    now[0] += 0.05
    pub.publish(batch(2, "us-east", "standard", 10))
    # When the admitted copy's 100 ms pass (the held ones' 500 ms have not)
    now[0] += 0.15
    pub.poll()
    # Then both went, held first: a device's readings reach screening in time order
    sent = [(b.batch_id.split("+")[0], len(b)) for _, b in screen_copies(app)]
    assert sent == [("p:us-east:standard:held1.0", 30), ("p:us-east:standard:2", 10)]
