"""What ingest counted and dead-lettered, sent to the store in the background.

Counters go to the store at most every ``flush_s`` (and on flush), not once per call:
a gateway may call ingest hundreds of times a second, and each write is a round trip.
Dead letters go at once, unless Redis is in its outage backoff; both are kept for the
next try when the store does not answer.
"""

from __future__ import annotations

from ingest.broker_link import BrokerLink
from ingest.ingest_types import OUTAGE_ERRORS
from scheduler.model import DeadLetter
from stores.protocols import StateStore

COUNTERS = ("ingested", "accepted", "pushed_back", "screened_while_held")


class IngestTally:
    def __init__(self, store: StateStore, link: BrokerLink, flush_s: float = 0.1) -> None:
        self.store = store
        self.link = link
        self.flush_s = flush_s
        self.unsent = dict.fromkeys(COUNTERS, 0)
        self._letters: list[DeadLetter] = []
        self._sent_ts = float("-inf")

    def count(self, name: str, n: int) -> None:
        self.unsent[name] += n

    def dead_letter(self, letters: list[DeadLetter]) -> None:
        if letters:
            self._letters.extend(letters)
            self.send_letters()

    def due(self, now: float) -> bool:
        return now - self._sent_ts >= self.flush_s

    def send_counts(self, now: float) -> None:
        self._sent_ts = now
        if not any(self.unsent.values()) or self.link.in_backoff():
            return
        try:
            self.store.incr_counters(self.unsent)
        except OUTAGE_ERRORS as exc:
            self.link.note_outage(exc)  # kept for the next flush
            return
        self.unsent = dict.fromkeys(self.unsent, 0)

    def send_letters(self) -> None:
        if not self._letters or self.link.in_backoff():
            return
        try:
            self.store.add_dead_letters(self._letters)
        except OUTAGE_ERRORS as exc:
            self.link.note_outage(exc)
            return
        self._letters = []
