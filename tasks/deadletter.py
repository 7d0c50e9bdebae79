"""Hand a payload a task cannot process to the dead-letter stream, with its reason."""

from __future__ import annotations

import time
from typing import Any

import msgpack

from scheduler.model import DeadLetter
from tasks import context


def dead_letter_payload(payload: Any, reason: str, detail: str, source: str) -> None:
    readings = int(payload.get("n", 1)) if isinstance(payload, dict) else 1
    try:
        raw = msgpack.packb(payload, use_bin_type=True)
    except (TypeError, ValueError):
        raw = repr(payload).encode()
    context.store().add_dead_letters(
        [DeadLetter(reason, detail, raw, source, time.time(), readings)]
    )
