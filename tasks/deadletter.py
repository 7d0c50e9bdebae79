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
from typing import Any

import msgpack

from scheduler.model import DeadLetter
from stores.protocols import StateStore


def payload_readings(payload: Any) -> int:
    """Readings a payload really carries (its device column), never what its ``n`` claims."""
    if isinstance(payload, dict):
        column = payload.get("device_id")
        if isinstance(column, bytes | bytearray):
            return len(column) // 8
    return 0


def dead_letter_payload(
    store: StateStore, payload: Any, reason: str, detail: str, source: str
) -> None:
    """A payload that is not a batch at all (or not a decodable one)."""
    try:
        raw = msgpack.packb(payload, use_bin_type=True)
    except (TypeError, ValueError):
        raw = repr(payload).encode()
    letter = DeadLetter(reason, detail, raw, source, time.time(), payload_readings(payload))
    store.add_dead_letters([letter])
