"""RunBudget: how much of a cycle the MQTT bridge offers before it looks at the premium lane.

The bridge decodes and offers a cycle's messages in runs, and offers the premium-lane
messages that arrived meanwhile between runs; so a premium reading waits in the bridge
for at most the run in hand. Counted in messages, a run's length in time varied a
hundredfold with what the messages carry (a device's one reading, a gateway's hundred)
and, on a shared machine, with the CPU the bridge gets. A run is therefore sized in
reading-sized units (a message, or ``UNIT_BYTES`` of payload, whichever is more) from
the time recent runs took per unit, so that it lasts about ``RUN_BUDGET_S``.
"""

from __future__ import annotations

from collections.abc import Iterator

from ingest.mqtt_client import Received

#: How long one run should take: a premium message arriving as a run starts waits this
#: long (plus the cycle's flush and acks) before it is offered.
RUN_BUDGET_S = 0.02
#: Payload bytes one unit stands for: about one JSON reading.
UNIT_BYTES = 64
#: Bounds on a run, in units. At least about a thousand readings: each run costs a
#: decode and an ingest call whatever its size, so shorter runs cost more per reading,
#: which shortened the next run further (at load 15, runs of one gateway message and
#: 45,000-60,000 readings/s against 63,000-75,000). At most what a quiet machine offers
#: in the budget.
MIN_RUN_UNITS = 1_000
MAX_RUN_UNITS = 8_000
#: Seconds per unit assumed before the first run was measured: a loaded machine's, so
#: the first runs are 2,000 readings, as the bridge's runs were before they were timed.
START_S_PER_UNIT = 1e-5
#: Weight of the latest run in the running cost per unit: a run that hit a slow publish
#: shortens the next few, not every run after it.
LATEST_WEIGHT = 0.25


def units(message: Received) -> int:
    """The reading-sized units a message counts for."""
    return max(1, len(message[1]) // UNIT_BYTES)


class RunBudget:
    def __init__(self, budget_s: float = RUN_BUDGET_S) -> None:
        self.budget_s = budget_s
        #: Running cost of offering one unit, from the runs measured so far.
        self.s_per_unit = START_S_PER_UNIT

    @property
    def run_units(self) -> int:
        """Units the next run takes: the budget at the running cost, within the bounds."""
        return int(min(MAX_RUN_UNITS, max(MIN_RUN_UNITS, self.budget_s / self.s_per_unit)))

    def runs(self, received: list[Received]) -> Iterator[list[Received]]:
        """``received`` in order, in runs each sized when it is taken (so by the cost of
        the runs before it, as ``spent`` reported them)."""
        i = 0
        while i < len(received):
            limit, size, start = self.run_units, 0, i
            while i < len(received) and size < limit:
                size += units(received[i])
                i += 1
            yield received[start:i]

    def spent(self, seconds: float, run: list[Received]) -> None:
        """Offering ``run`` took ``seconds``."""
        per_unit = max(seconds, 0.0) / max(1, sum(units(m) for m in run))
        self.s_per_unit += LATEST_WEIGHT * (per_unit - self.s_per_unit)
        self.s_per_unit = max(self.s_per_unit, self.budget_s / MAX_RUN_UNITS)
