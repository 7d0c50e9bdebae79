"""The bench harness: the one send path, and a private redis-server that keeps its data."""

from __future__ import annotations

import contextlib
import os
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from bench.redis_server import PrivateRedis, RedisUnavailable, private_redis
from bench.sending import bench_publisher, send_batches
from scheduler.codec import decode_batch
from scheduler.model import Batch


class RecordingApp:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Batch]] = []

    def send_task(self, name: str, args: tuple[Any, ...], queue: str, **_: Any) -> None:
        self.sent.append((name, queue, decode_batch(args[0])))

    def producer_or_acquire(self) -> Any:
        """No broker to pipeline to: a producer whose publish batch does nothing."""
        return contextlib.nullcontext(SimpleNamespace(batch=lambda size: contextlib.nullcontext()))


def _batch(batch_id: str, tier: str, n: int) -> Batch:
    zeros = np.zeros(n)
    return Batch(batch_id, "eu-west", tier, ("value",), np.arange(n, dtype=np.uint64), zeros,
                 np.zeros((n, 1)), zeros)  # fmt: skip


def test_a_bench_send_goes_out_whole_with_its_screening_copy() -> None:
    # Given the bench publisher with screening on
    app = RecordingApp()
    publisher = bench_publisher(app, screening=True)  # type: ignore[arg-type]
    # When two small standard batches are sent (far below a screening copy's size)
    readings = send_batches(publisher, [_batch("a", "standard", 3), _batch("b", "standard", 4)])
    # Then both went to the routine queue and their screening copy went with them, not later
    assert readings == 7
    queues = [queue for _, queue, _ in app.sent]
    assert queues.count("eu-west.standard") == 2
    assert queues.count("eu-west.screen") == 1
    screened = [b for _, queue, b in app.sent if queue == "eu-west.screen"]
    assert len(screened[0]) == 7


def _private_or_skip(**options: Any) -> PrivateRedis:
    try:
        return PrivateRedis(**options)
    except RedisUnavailable as exc:
        if os.environ.get("CI"):  # as tests/conftest.py: a missing tool fails under CI
            pytest.fail(f"{exc} (required under CI)")
        pytest.skip(str(exc))


def test_a_private_redis_with_aof_keeps_its_data_through_a_kill() -> None:
    # Given a private redis-server with every write fsynced to its AOF
    with _private_or_skip(appendfsync="always") as server:
        server.client().set("k", "v")
        # When it is killed without a shutdown and started again on the same directory
        server.kill()
        server.start()
        # Then the write is still there
        assert server.client().get("k") == b"v"


def test_private_redis_uses_the_url_given_and_starts_none() -> None:
    with private_redis("redis://example.invalid:6379/0") as url:
        assert url == "redis://example.invalid:6379/0"
