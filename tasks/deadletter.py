"""Hand what a task cannot process to the dead-letter stream, with its reason, atomically.

A chunk given up on is claimed (so no later delivery applies it), written to
the stream and counted in one MULTI/EXEC, WATCHing its claim: all three
happen, or none. When Redis refuses the write (``maxmemory`` reached, the
server gone) nothing is recorded and the caller leaves the batch in the
in-flight ledger, whose reaper publishes it again later; it is never counted
as dead-lettered without being in the stream.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgpack
import redis

from scheduler.model import DeadLetter
from stores.keys import Keys
from stores.redis_state import queue_dead_letters
from tasks import context


def payload_readings(payload: Any) -> int:
    """Readings a payload really carries (its device column), never what its ``n`` claims."""
    if isinstance(payload, dict):
        column = payload.get("device_id")
        if isinstance(column, bytes | bytearray):
            return len(column) // 8
    return 0


def dead_letter_payload(payload: Any, reason: str, detail: str, source: str) -> None:
    """A payload that is not a batch at all (or not a decodable one)."""
    try:
        raw = msgpack.packb(payload, use_bin_type=True)
    except (TypeError, ValueError):
        raw = repr(payload).encode()
    letter = DeadLetter(reason, detail, raw, source, time.time(), payload_readings(payload))
    context.store().add_dead_letters([letter])


def dead_letter_claimed(claimed: Sequence[tuple[str, DeadLetter]]) -> list[bool]:
    """Per (claim id, letter): claim it and dead-letter it, unless it was claimed before.

    Returns, per entry, True when this call dead-lettered it. With a Redis store
    the claims, stream entries and counter go in one transaction (retried if a
    claim moves under the WATCH); otherwise (the embedded in-memory store, where
    nothing is redelivered) every letter is written.
    """
    store: Any = context.store()
    client: Any = getattr(store, "client", None)
    keys = getattr(store, "keys", None)
    if not isinstance(client, redis.Redis) or not isinstance(keys, Keys):
        store.add_dead_letters([dl for _, dl in claimed])
        return [True] * len(claimed)
    ttl_s = int(store.claim_ttl_s)
    maxlen = int(store.dead_letter_maxlen)
    claim_keys = [keys.claim(cid) for cid, _ in claimed]
    while True:
        pipe: Any
        with client.pipeline(transaction=True) as pipe:
            try:
                if not claim_keys:
                    return []
                pipe.watch(*claim_keys)
                free = [not pipe.exists(k) for k in claim_keys]
                pipe.multi()
                written = []
                for key, (_, dl), ok in zip(claim_keys, claimed, free, strict=True):
                    if ok:
                        pipe.set(key, "dead_lettered", ex=ttl_s)
                        written.append(dl)
                if written:
                    queue_dead_letters(pipe, keys, written, maxlen)
                pipe.execute()
                return free
            except redis.WatchError:
                continue
