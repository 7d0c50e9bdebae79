"""Dead letters re-offered through ingest, as if their devices had sent them again.

For example after registering the device an ``unknown_device`` letter names. What
fails again is dead-lettered again with its new reason; the original entries are
taken out only after every re-offered reading of their page is published or
re-lettered, so a crash in between duplicates at worst, never loses.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import msgpack

from ingest.producer import IngestResult, Producer
from scheduler.codec import decode_batch
from scheduler.errors import InvalidBatch
from scheduler.model import Batch
from stores.dead_letter_stream import DeadLetterStream, StoredLetter

#: Letters re-offered, flushed and taken out together.
REPLAY_PAGE_LETTERS = 500


@dataclass
class ReplaySummary:
    letters: int = 0
    readings: int = 0
    accepted: int = 0
    dead_lettered_again: int = 0
    again_by_reason: Counter[str] = field(default_factory=Counter)
    #: Letters that hold no readings to re-offer, by ``source/reason`` (left in the stream).
    kept_not_replayable: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "letters": self.letters,
            "readings": self.readings,
            "accepted": self.accepted,
            "dead_lettered_again": self.dead_lettered_again,
            "again_by_reason": dict(self.again_by_reason),
            "kept_not_replayable": dict(self.kept_not_replayable),
        }

    def tally(self, result: IngestResult) -> None:
        self.accepted += result.accepted
        self.dead_lettered_again += result.rejected
        self.again_by_reason.update(result.reasons)


def replay_letters(
    producer: Producer, stream: DeadLetterStream, reason: str | None = None
) -> ReplaySummary:
    """Re-offers every letter written so far (of ``reason``, if given), oldest first."""
    summary = ReplaySummary()
    end = stream.last_id()
    if end is None:
        return summary
    letters = stream.scan(reason, until_id=end)
    while page := list(islice(letters, REPLAY_PAGE_LETTERS)):
        replayed = _replay_page(producer, page, summary)
        producer.flush()
        # Only now, with every re-offered reading published or re-lettered.
        stream.take_out_replayed(replayed)
    return summary


def _replay_page(
    producer: Producer, page: list[StoredLetter], summary: ReplaySummary
) -> list[StoredLetter]:
    singles = [s for s in page if s.letter.source == "ingest"]
    replayed = list(singles)
    if singles:
        summary.tally(producer.ingest([s.letter.payload for s in singles]))
    for stored in page:
        if stored.letter.source == "ingest":
            continue
        batch = _batch_of(stored)
        if batch is None:
            summary.kept_not_replayable[f"{stored.letter.source}/{stored.letter.reason}"] += 1
            continue
        summary.tally(producer.ingest_columns(batch.device_id, batch.ts, batch.values))
        replayed.append(stored)
    summary.letters += len(replayed)
    summary.readings += sum(s.letter.readings for s in replayed)
    return replayed


def _batch_of(stored: StoredLetter) -> Batch | None:
    """The readings of a letter a task wrote (a msgpack batch), or None if it holds none."""
    if stored.letter.readings <= 0:
        return None  # a screening copy: its readings were processed on the routine path
    try:
        return decode_batch(msgpack.unpackb(stored.letter.payload, raw=False))
    except (InvalidBatch, ValueError, TypeError, msgpack.UnpackException):
        return None
