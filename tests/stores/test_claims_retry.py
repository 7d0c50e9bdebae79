"""Given a connection that dies under the WATCH, a batch is applied once, not taken for a
duplicate (redis-py reports the dead connection as a WatchError)."""

from __future__ import annotations

from typing import Any

import fakeredis
import redis

from stores.claims import apply_once


def test_a_watch_lost_with_its_connection_is_retried_and_the_batch_applied() -> None:
    client = fakeredis.FakeRedis()
    failures = [redis.WatchError("A TimeoutError occurred while watching one or more keys")]

    def prepare(pipe: Any) -> Any:
        def write(p: Any) -> None:
            p.hincrby("counters", "processed", 5)
            if failures:
                raise failures.pop()

        return write

    assert apply_once(client, "claim:b1", 60, "counters", "dups", prepare) is True
    assert client.hget("counters", "processed") == b"5"
    assert client.hget("counters", "dups") is None
    # A real second delivery is still recognised by the claim.
    assert apply_once(client, "claim:b1", 60, "counters", "dups", prepare) is False
    assert client.hget("counters", "dups") == b"1"
