"""Apply a batch's effects once: a claim key WATCHed, then one MULTI/EXEC with the writes.

Every store that must survive redelivery uses this one mechanism. If the claim
exists, or another delivery sets it between WATCH and EXEC, nothing is written
and the duplicate is counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

#: Queues a batch's writes on the transaction pipeline.
Writer = Callable[[Any], None]


def apply_once(
    client: Any,
    claim_key: str,
    claim_ttl_s: int,
    counters_key: str,
    duplicate_counter: str,
    prepare: Callable[[Any], Writer],
) -> bool:
    """``prepare(pipe)`` may read (immediate mode, under the WATCH) and returns the writer.

    Returns True when this call applied the effects, False for a duplicate.
    """
    while True:
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(claim_key)
                if pipe.exists(claim_key):
                    pipe.unwatch()
                    break
                write = prepare(pipe)
                pipe.multi()
                pipe.set(claim_key, 1, ex=claim_ttl_s)
                write(pipe)
                pipe.execute()
                return True
            except redis.WatchError:
                # Another delivery claimed it (the next pass sees the claim), or the
                # connection died under the WATCH (redis-py raises WatchError for that
                # too): only the claim itself may say "applied before".
                continue
    client.hincrby(counters_key, duplicate_counter, 1)
    return False
