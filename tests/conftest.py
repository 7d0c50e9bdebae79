"""Shared fixtures: a private redis-server per test session, on a free port (bench harness)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from bench.redis_server import PrivateRedis, RedisUnavailable

IN_CI = bool(os.environ.get("CI"))


def unavailable(reason: str) -> None:
    """Skip locally, fail under CI: there every tool the tests need must be installed."""
    if IN_CI:
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a private redis-server; skips locally (fails under CI) when none is installed."""
    try:
        server = PrivateRedis()
    except RedisUnavailable as exc:
        unavailable(f"{exc}; integration tests need it")
    try:
        server.start(timeout_s=10)
        yield server.url
    finally:
        server.close()


@pytest.fixture
def key_prefix() -> str:
    """A fresh key prefix per test, so tests sharing the server never see each other's keys."""
    return f"t-{uuid.uuid4().hex[:10]}"
