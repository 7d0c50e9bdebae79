"""Premium batches coalesce while their region's premium queue is backed up.

Every routine message costs its worker a fixed price on top of its readings (fetch and
ack, the claim's WATCH and transaction, the in-flight ledger, the producer's publish and
ledger record). Premium's 25 ms age limit makes its batches small, so inside a spike that
fixed price becomes most of premium's slot time: traced on real workers
(``iotsched bench --pattern fleet_spike``), a premium task of about 50 readings took
40 ms where a 5,000-reading standard task took 140 ms, and premium waited behind
premium's own tasks, not behind other work.

A premium batch published while at least ``queued_messages`` premium messages of its
region still wait in the broker would only queue behind them: held in the batcher
instead, it loses nothing, and the premium readings arriving meanwhile share its message.
It goes out as soon as the queue is down to fewer messages, when it fills, or at the
latest ``max_hold_ms`` after its oldest reading arrived, whichever comes first. With the
queue short (no spike) nothing changes: batches leave at the age limit as before.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Premium messages still waiting in a region's queue from which a new premium batch is
#: held: eight, i.e. only when premium itself is saturated. Measured back to back on
#: the shared machine, a hold from three messages halved premium p99 in saturated runs
#: but, at moderate load (load average 6-8, ``--pattern fleet_spike --rate-rps 8000``),
#: took premium p99 inside the spike from 258 ms to 792 ms: a short queue drains
#: within the depth's staleness, the worker takes lower work meanwhile, and the held
#: batch then waits behind that.
PREMIUM_HOLD_QUEUED_MESSAGES = 8
#: The longest a premium reading is held in the batcher (beyond which it is sent however
#: long the queue): a fifth of premium's 500 ms bound.
PREMIUM_MAX_HOLD_MS = 100.0
#: How often the producer reads the premium queues' depth while it holds a batch.
PREMIUM_DEPTH_REFRESH_MS = 10.0


@dataclass(frozen=True)
class PremiumCoalescing:
    queued_messages: int = PREMIUM_HOLD_QUEUED_MESSAGES
    max_hold_ms: float = PREMIUM_MAX_HOLD_MS
    refresh_ms: float = PREMIUM_DEPTH_REFRESH_MS

    def __post_init__(self) -> None:
        if self.queued_messages < 1 or self.max_hold_ms < 0 or self.refresh_ms <= 0:
            raise ValueError(f"need queued_messages >= 1, max_hold_ms >= 0, refresh_ms > 0: {self}")

    def backed_up(self, queued: int) -> bool:
        """Whether a premium queue holding ``queued`` messages makes a new batch wait."""
        return queued >= self.queued_messages

    def holds(self, queued: int, age_s: float) -> bool:
        """Whether a premium batch whose oldest reading is ``age_s`` old stays in the
        batcher while ``queued`` messages wait in its region's premium queue."""
        return self.backed_up(queued) and age_s < self.max_hold_ms / 1e3
