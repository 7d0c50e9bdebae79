"""Claim chunk ids for the dead-letter stream, so no later delivery applies them too.

``apply_batch`` claims a chunk id and applies its effects together. Work given
up on (retries exhausted, hard time limit, a pool process lost again and again)
takes the same claims first: a chunk whose claim it wins is dead-lettered and
can never be applied afterwards by a stray redelivery; a chunk already claimed
was applied, so it is not dead-lettered. Either way each reading is counted
exactly once, as processed or as dead-lettered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import redis

from stores.keys import Keys


class ChunkClaims(Protocol):
    def claim_for_dead_letter(self, claim_ids: Sequence[str]) -> list[bool]:
        """For each id: True if this call claimed it (dead-letter it), False if it was applied."""


class RedisChunkClaims:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s

    def claim_for_dead_letter(self, claim_ids: Sequence[str]) -> list[bool]:
        pipe = self.client.pipeline(transaction=False)
        for cid in claim_ids:
            pipe.set(self.keys.claim(cid), "dead_lettered", ex=self.ttl_s, nx=True)
        return [bool(ok) for ok in pipe.execute()]


class UnsharedChunkClaims:
    """In one process with an in-memory store nothing is redelivered: every claim is won."""

    def claim_for_dead_letter(self, claim_ids: Sequence[str]) -> list[bool]:
        return [True] * len(claim_ids)
