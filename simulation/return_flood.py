"""Reconnect floods on the virtual clock, folded by the runtime's own rules and objects.

A silence event (``AnomalyEvent.silence``) ends with each of its devices' next reading,
spread over the device's reading interval. Screening takes those returns in batches (by
the screening copies' flush age, ``defaults.PREMIUM_MAX_AGE_MS`` for premium and
``defaults.SCREEN_MAX_AGE_MS`` otherwise, up to ``ServiceModel.batch_readings``; or of a
fixed size, ``AnomalyEvent.batch_readings``, to play a loaded machine's small batches)
and folds each batch as the screening task does
(``scheduler.return_fold.fold_batch_returns`` with the runtime's ``FoldConfig``): in a
fleet-wide outage no peer reports through the silence, so every return a batch holds is
examined and quiet at the outage's instant. The events and the returns left alone go to
the runtime's ``Correlator`` (``CorrelatorConfig``) at the instant their batch is
screened; the incidents it notifies are the ones counted. A silence never books
accelerated work (``tasks.anomaly``), so none is simulated for it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from scheduler import defaults
from scheduler.alert import SILENCE_KIND, Alert, Silence
from scheduler.correlation import Correlator, CorrelatorConfig
from scheduler.dropout_fold import FoldConfig, silence_entries
from scheduler.incident import Incident, IncidentUpdate
from scheduler.return_fold import fold_batch_returns
from simulation.spec import AnomalyEvent, SimSpec

IDX = npt.NDArray[np.intp]

#: The fleet's premium tier code (``simulation.scenarios.PREMIUM_TIER``).
_PREMIUM_TIER = 0


class ReturnFlood:
    """The returns of one run's silence events, screened in batches and correlated."""

    def __init__(
        self,
        spec: SimSpec,
        fold: FoldConfig | None = None,
        correlator: CorrelatorConfig | None = None,
    ) -> None:
        self.spec = spec
        self.fold = fold or FoldConfig()
        self.config = correlator or CorrelatorConfig()
        self.correlator = Correlator(self.config)
        self._rng = np.random.default_rng(spec.seed)
        #: (screened at t_s, region, device rows) of batches not yet screened.
        self._batches: list[tuple[float, int, IDX]] = []
        #: Every incident notified, as of its latest notice, by id.
        self.notified: dict[str, Incident] = {}

    def start(self, t_s: float, event: AnomalyEvent) -> None:
        """The event's devices come back from ``t_s`` on, each within its interval."""
        fleet = self.spec.fleet
        mine = (fleet.home_region == event.region) & (fleet.tier == event.tier)
        rows = np.flatnonzero(mine)[: event.devices].astype(np.intp)
        back_s = t_s + self._rng.random(rows.size) * fleet.reading_interval_s[rows]
        order = np.argsort(back_s, kind="stable")
        rows, back_s = rows[order], back_s[order]
        if event.batch_readings > 0:
            for lo in range(0, rows.size, event.batch_readings):
                hi = min(lo + event.batch_readings, rows.size)
                self._batches.append((float(back_s[hi - 1]), event.region, rows[lo:hi]))
        else:
            age_s = self._age_s(event.tier)
            slot = np.floor((back_s - t_s) / age_s).astype(np.int64)
            cap = self.spec.service.batch_readings
            for k in np.unique(slot).tolist():
                in_slot = rows[slot == k]
                for lo in range(0, in_slot.size, cap):
                    flushed_s = t_s + (k + 1) * age_s
                    self._batches.append((flushed_s, event.region, in_slot[lo : lo + cap]))
        self._batches.sort(key=lambda b: b[0])

    def advance(self, t_s: float) -> None:
        """Screen and correlate every batch due by ``t_s``, then run the timers at ``t_s``."""
        while self._batches and self._batches[0][0] <= t_s:
            at_s, region, rows = self._batches.pop(0)
            self._screen(at_s, region, rows)
        self._record(self.correlator.tick(self.spec.start_ts + t_s))

    def finish(self, t_s: float) -> None:
        """The run ended at ``t_s``: what is still waiting for its first notice gets it."""
        self.advance(t_s)
        wait_s = max(self.config.group_wait_s, self.config.silence_wait_s)
        self._record(self.correlator.tick(self.spec.start_ts + t_s + wait_s))

    def _screen(self, at_s: float, region: int, rows: IDX) -> None:
        fleet = self.spec.fleet
        group = fleet.group[rows].astype(np.int64)
        folded = fold_batch_returns(group, np.ones(rows.size, dtype=np.bool_), group, self.fold)
        now_ts = self.spec.start_ts + at_s
        name = fleet.regions[region]
        ids = rows.astype(np.uint64)
        since = np.full(rows.size, now_ts)
        silences = [
            Silence(
                name,
                str(entry["group"]),
                int(entry["devices"]),
                float(entry["first_ts"]),
                float(entry["last_ts"]),
                tuple(entry["sample"]),
            )
            for entry in silence_entries(ids, since, folded.events)
        ]
        alone = [
            Alert(int(rows[i]), str(int(group[i])), name, now_ts, SILENCE_KIND)
            for i in folded.individual.tolist()
        ]
        self._record(self.correlator.observe(alone, now_ts, silent_now=False, silences=silences))

    def _record(self, updates: list[IncidentUpdate]) -> None:
        for update in updates:
            self.notified[update.incident.incident_id] = update.incident

    def _age_s(self, tier: int) -> float:
        age_ms = (
            defaults.PREMIUM_MAX_AGE_MS if tier == _PREMIUM_TIER else defaults.SCREEN_MAX_AGE_MS
        )
        return max(age_ms / 1000.0, self.spec.step_s / 10.0)
