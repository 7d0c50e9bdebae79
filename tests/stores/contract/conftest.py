"""One contract per store Protocol, run against Redis (a private redis-server) and memory.

``stores`` builds the whole bundle the way a process does (``redis_stores`` or
``memory_stores``); ``fill_queue`` puts messages in a broker queue of either kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from scheduler.settings import Settings
from stores.bundle import Stores, memory_stores, redis_stores
from stores.keys import Keys
from stores.memory_broker import MemoryQueueDepth

REGIONS = ("eu", "us")


@pytest.fixture(params=["redis", "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, request: pytest.FixtureRequest, key_prefix: str) -> Settings:
    url = request.getfixturevalue("redis_server") if backend == "redis" else "memory://"
    return Settings(redis_url=url, key_prefix=key_prefix, regions=REGIONS, region_budget_slots=8)


@pytest.fixture
def stores(backend: str, settings: Settings) -> Iterator[Stores]:
    if backend == "memory":
        yield memory_stores(settings)
        return
    client = redis.Redis.from_url(settings.redis_url)
    yield redis_stores(settings, client=client)
    keys = list(client.scan_iter(match=f"{settings.key_prefix}*", count=1_000))
    if keys:
        client.unlink(*keys)
    client.close()


FillQueue = Callable[[str, int], None]


@pytest.fixture
def fill_queue(backend: str, stores: Stores, settings: Settings) -> FillQueue:
    """Make ``queue`` hold ``n`` waiting messages."""

    def fill(queue: str, n: int) -> None:
        if isinstance(stores.queue_depth, MemoryQueueDepth):
            stores.queue_depth.set(queue, n)
            return
        client = stores.redis_client
        assert client is not None
        lists = Keys(settings.key_prefix).broker_queue_lists(queue)
        client.delete(*lists)
        if n:
            client.lpush(lists[0], *[b"{}"] * n)

    return fill


@pytest.fixture
def swept_blobs(stores: Stores) -> Callable[[], dict[int, bytes]]:
    """Every "eu" device's state blob as one dropout sweep pass reads it: a pass may
    take several pages (SCAN over a keyspace other tests share), so each page's are kept."""

    def sweep_pass() -> dict[int, bytes]:
        blobs: dict[int, bytes] = {}
        for _ in range(1_000):
            page = stores.dropout.page("eu", 100)
            blobs.update(zip(page.device_ids.tolist(), page.blobs, strict=True))
            if page.wrapped:
                break
        return blobs

    return sweep_pass
