"""Doubles for driving ``QueueDepthAutoscaler`` without a worker: pool, clock, worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from workers.autoscaler import QueueDepthAutoscaler
from workers.profiles import region_queues

REGION = "eu-west"
NODE = "data-eu-west-1@host"


@dataclass
class FakePool:
    """The three calls Celery's autoscaler makes on a pool."""

    num_processes: int
    calls: list[str] = field(default_factory=list)

    def grow(self, n: int) -> None:
        self.num_processes += n
        self.calls.append(f"grow {n}")

    def shrink(self, n: int) -> None:
        self.num_processes -= n
        self.calls.append(f"shrink {n}")

    def maintain_pool(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now_ts = 1_000_000.0

    def __call__(self) -> float:
        return self.now_ts


def fake_worker(node: str = NODE, region: str = REGION) -> Any:
    """A worker as the autoscaler reads it: its hostname and the region's queues."""
    consume_from = {q: None for q in region_queues(region)}
    return SimpleNamespace(
        hostname=node, app=SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(
            consume_from=consume_from))),
    )  # fmt: skip


def refresh_for(scaler: QueueDepthAutoscaler, clock: Clock, seconds: float) -> None:
    """Refresh and act every 0.25 s of the clock for ``seconds``, as the background would."""
    end = clock.now_ts + seconds
    while clock.now_ts < end:
        clock.now_ts += 0.25
        scaler.refresh()
        scaler.maybe_scale()
