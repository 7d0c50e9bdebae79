"""Admission of non-premium readings: from the measured drain rate and queue depth.

A region admits standard readings while the ones already waiting would be drained
within ``wait_budget_s`` at the rate its workers are measured to drain them
(Little's law: wait = waiting / drain rate). No reading count is set by hand: the
same policy holds a small deployment and a large one to the same wait. Premium is
never pushed back; what is not admitted is handed back to the caller, not dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

#: Default wait budget of non-premium readings queued in a region, seconds. Standard
#: detection must stay under 5 s up to 2x capacity (DETECTION_BOUND_S): 2 s of queue,
#: plus the 250 ms batch age, the 100 ms screening coalescing and the gate's lag
#: (one refresh, 0.2 s, while it admits at full speed) leave room to spare.
WAIT_BUDGET_S = 2.0
#: The drain rate is measured over this long (seconds): long enough to average a few
#: batches per region, short enough to follow a change of worker count within a second.
DRAIN_WINDOW_S = 1.0


@dataclass
class DrainMeter:
    """Readings per second drained, from a cumulative processed counter sampled over time."""

    window_s: float = DRAIN_WINDOW_S
    #: The shortest span a rate is taken over; before that nothing is measured.
    min_span_s: float = 0.15
    _samples: deque[tuple[float, float]] = field(default_factory=deque)

    def update(self, at_s: float, processed: float) -> float | None:
        """The drain rate up to this sample; None until ``min_span_s`` has been seen."""
        samples = self._samples
        if samples and (
            at_s <= samples[-1][0]
            or processed < samples[-1][1]
            or at_s - samples[-1][0] > self.window_s
        ):
            # A clock step, a counter reset, or a pause in sampling (an idle producer):
            # a rate across an idle spell says nothing of the workers, so measure afresh.
            samples.clear()
        samples.append((at_s, processed))
        while len(samples) > 2 and samples[1][0] <= at_s - self.window_s:
            samples.popleft()
        first_s, first = samples[0]
        span = at_s - first_s
        if span < self.min_span_s:
            return None
        return (processed - first) / span


def admits(waiting_readings: float, drain_rps: float | None, wait_budget_s: float) -> bool:
    """True when readings waiting in a region drain within the budget at the measured rate.

    Nothing waiting always admits; nothing measured yet admits (the first window of a
    run); a backlog with no measured drain (workers gone or stalled) does not.
    """
    if wait_budget_s <= 0:
        raise ValueError(f"wait budget must be positive, got {wait_budget_s} s")
    if waiting_readings <= 0 or drain_rps is None:
        return True
    if drain_rps <= 0:
        return False
    return waiting_readings / drain_rps <= wait_budget_s
