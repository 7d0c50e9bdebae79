"""The dead-letter stream as an operator sees it: list, show, take out after a replay, purge.

Entries are written by ``StateStore.add_dead_letters`` (stream ``Keys.dead_letters``);
an entry's id is its Redis stream id (``<ms>-<seq>``), so ids sort by time.
Counters stay exact: ``dead_lettered`` (and ``dead_lettered:{reason}``) count the
readings in the stream or purged from it; a replay takes its readings out of
those counts and adds them to ``replayed_readings`` in the same transaction
that deletes the entries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from scheduler.model import DeadLetter, readings_by_reason
from stores.keys import Keys

_PAGE = 500


@dataclass(frozen=True)
class StoredLetter:
    letter_id: str
    letter: DeadLetter


def _decode(entry_id: bytes | str, f: dict[bytes, bytes]) -> StoredLetter:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    letter = DeadLetter(
        reason=f.get(b"reason", b"").decode(errors="replace"),
        detail=f.get(b"detail", b"").decode(errors="replace"),
        payload=f.get(b"payload", b""),
        source=f.get(b"source", b"").decode(errors="replace"),
        at_ts=float(f.get(b"at_ts", 0.0)),
        readings=int(f.get(b"readings", 1)),
    )
    return StoredLetter(text, letter)


def id_at(ts: float) -> str:
    """The smallest stream id at or after ``ts`` (epoch seconds)."""
    return f"{max(0, int(ts * 1000))}-0"


class DeadLetterStream:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def scan(
        self, reason: str | None = None, since_ts: float | None = None, until_id: str = "+"
    ) -> Iterator[StoredLetter]:
        """Oldest first, a page at a time, from ``since_ts`` up to ``until_id`` inclusive."""
        start = "-" if since_ts is None else id_at(since_ts)
        while True:
            page: Any = self.client.xrange(self.keys.dead_letters, start, until_id, count=_PAGE)
            for entry_id, fields in page:
                stored = _decode(entry_id, fields)
                if reason is None or stored.letter.reason == reason:
                    yield stored
            if len(page) < _PAGE:
                return
            start = "(" + _decode(page[-1][0], {}).letter_id

    def latest(self, count: int, reason: str | None = None) -> list[StoredLetter]:
        """The ``count`` newest letters (with ``reason``, if given), oldest first."""
        out: list[StoredLetter] = []
        end = "+"
        while len(out) < count:
            page: Any = self.client.xrevrange(self.keys.dead_letters, end, "-", count=_PAGE)
            for entry_id, fields in page:
                stored = _decode(entry_id, fields)
                if reason is None or stored.letter.reason == reason:
                    out.append(stored)
                    if len(out) == count:
                        break
            if len(page) < _PAGE:
                break
            end = "(" + _decode(page[-1][0], {}).letter_id
        return out[::-1]

    def last_id(self) -> str | None:
        page: Any = self.client.xrevrange(self.keys.dead_letters, "+", "-", count=1)
        return _decode(page[0][0], {}).letter_id if page else None

    def get(self, letter_id: str) -> StoredLetter | None:
        page: Any = self.client.xrange(self.keys.dead_letters, letter_id, letter_id, count=1)
        return _decode(page[0][0], page[0][1]) if page else None

    def take_out_replayed(self, letters: Sequence[StoredLetter]) -> int:
        """Delete letters whose readings were re-offered; returns readings taken out."""
        if not letters:
            return 0
        counters = self.keys.counters
        readings = sum(s.letter.readings for s in letters)
        pipe = self.client.pipeline(transaction=True)
        pipe.xdel(self.keys.dead_letters, *[s.letter_id for s in letters])
        pipe.hincrby(counters, "dead_lettered", -readings)
        for reason, n in readings_by_reason(s.letter for s in letters).items():
            pipe.hincrby(counters, f"dead_lettered:{reason}", -n)
        pipe.hincrby(counters, "replayed_readings", readings)
        pipe.execute()
        return readings

    def purge(self, before_ts: float) -> int:
        """Drop letters written before ``before_ts``; returns how many entries went.

        Their readings stay counted as dead-lettered (they were); ``dead_letters_purged``
        counts the entries dropped, so the stream and the counters can still be reconciled.
        """
        removed = int(
            self.client.xtrim(self.keys.dead_letters, minid=id_at(before_ts), approximate=False)
        )
        if removed:
            self.client.hincrby(self.keys.counters, "dead_letters_purged", removed)
        return removed
