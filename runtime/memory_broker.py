"""Reads of kombu's in-memory transport, for the embedded run's preemption and acceleration.

The memory transport keeps every queue of the process in one class-level dict
(``kombu.transport.memory.Channel.queues``) of ``queue.Queue`` objects holding
the same envelopes the Redis transport writes as JSON. Reading them takes
nothing off the queue.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import memory

from stores.queue_scan import decode_routine

__all__ = ["decode_routine", "depth_of", "routine_payloads_of"]


def depth_of(queue: str) -> int:
    """Messages waiting in ``queue`` of this process's in-memory broker."""
    q = memory.Channel.queues.get(queue)
    return 0 if q is None else int(q.qsize())


def routine_payloads_of(queue: str) -> list[dict[str, Any]]:
    """Routine batch payloads waiting in ``queue``, newest first (as the Redis scan reads)."""
    q = memory.Channel.queues.get(queue)
    if q is None:
        return []
    with q.mutex:
        envelopes = list(q.queue)
    found = (decode_routine(e) for e in reversed(envelopes))
    return [p for p in found if p is not None]
