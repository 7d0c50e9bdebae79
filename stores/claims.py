"""Apply a batch's effects once: a claim key WATCHed, then one MULTI/EXEC with the writes.

Every store that must survive redelivery uses this one mechanism, except the detector
store, whose commit must also find its devices' states as it loaded them and so WATCHes
the detector-write count instead (``stores.detector_store``). If the claim exists, or
another delivery sets it between WATCH and EXEC, nothing is written and the duplicate
is counted.

The writes arrive packed (``stores.resp``): a batch's MSET or HSET of thousands of
fields costs far less packed from arrays than through redis-py's per-argument packer.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from stores.resp import Command, Session, command

#: Given the session holding the WATCH (to read under it), returns the batch's packed
#: write commands.
Prepare = Callable[[Session], list[Command]]

_UNWATCH = command(b"UNWATCH")


class _WatchLost(Exception):
    """Raised when the connection died while holding the WATCH."""


def apply_once(
    client: object,
    claim_key: str,
    claim_ttl_s: int,
    counters_key: str,
    duplicate_counter: str,
    prepare: Prepare,
) -> bool:
    """``prepare(session)`` may read (packed, under the WATCH) and returns the writes.

    Returns True when this call applied the effects, False for a duplicate.
    """
    claim = claim_key.encode()
    while True:
        try:
            with Session(client) as session:
                applied = _apply(
                    session, claim, claim_ttl_s, counters_key, duplicate_counter, prepare
                )
        except _WatchLost:
            # Perhaps after EXEC applied everything: only the claim itself may say
            # "applied before", so the next pass reads it again.
            continue
        if applied is not None:
            return applied
        # Another delivery set the claim between WATCH and EXEC: the next pass sees it.


def _apply(
    session: Session,
    claim: bytes,
    claim_ttl_s: int,
    counters_key: str,
    duplicate_counter: str,
    prepare: Prepare,
) -> bool | None:
    """True: applied; False: claimed before (counted); None: the WATCH fired."""
    # Nothing is watched before this round trip answers, so it may reconnect and resend.
    _, exists = session.run([command(b"WATCH", claim), command(b"EXISTS", claim)], retry=True)
    if exists:
        session.run([_UNWATCH, command(b"HINCRBY", counters_key, duplicate_counter, 1)])
        return False
    try:
        writes = prepare(session)
        claimed = command(b"SET", claim, b"1", b"EX", claim_ttl_s)
        replies = session.transaction([claimed, *writes])
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise _WatchLost from exc
    return None if replies is None else True
