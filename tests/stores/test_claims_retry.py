"""Given a connection that dies under the WATCH, a batch is applied once, not taken for a
duplicate: only the claim itself says whether the batch was applied before."""

from __future__ import annotations

import fakeredis
import redis

from stores.claims import apply_once
from stores.resp import Session, command


def test_a_watch_lost_with_its_connection_is_retried_and_the_batch_applied() -> None:
    client = fakeredis.FakeRedis()
    failures = [redis.ConnectionError("Connection closed by server.")]

    def prepare(session: Session) -> list[bytes]:
        if failures:
            raise failures.pop()
        return [command(b"HINCRBY", "counters", "processed", 5)]

    assert apply_once(client, "claim:b1", 60, "counters", "dups", prepare) is True
    assert client.hget("counters", "processed") == b"5"
    assert client.hget("counters", "dups") is None
    # A real second delivery is still recognised by the claim.
    assert apply_once(client, "claim:b1", 60, "counters", "dups", prepare) is False
    assert client.hget("counters", "dups") == b"1"
    assert client.hget("counters", "processed") == b"5"
