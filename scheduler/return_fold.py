"""Which returns from silence are one event: folded at screening, before alerting.

The dropout sweep (``scheduler.dropout_fold``) folds silences it finds while they last.
A silence shorter than a sweep period (a gateway or network blip, a producer stall)
is seen only when the devices come back: screening raises "dropout" on the reading that
ends it. Alerted one by one, a fleet pausing for two seconds is thousands of alerts.

So screening folds the returns of one batch the way the sweep folds silences, with the
same thresholds (``FoldConfig``). Each return is a silence interval: from the device's
last reading before it to the reading that ended it. An instant inside the silences
that overlap most (``common_silence_ts``) is taken as the moment of the outage, and
every device the batch examined (interval known, heard before that instant) is judged
at it: quiet when its last reading before it is older than ``quiet_factor`` x its usual
interval (and newer than ``together_s``), as the sweep judges at its own now, or when
the gap around the instant (to its next reading) is longer than that, so a fleet whose
source slowed past the devices' limits is quiet together although no instant finds
most of them past their own; a device silent briefly with no reading since is not
judged. Then ``fold_silences`` decides: a region or a group mostly quiet at that
instant makes its returns there one event, if they are at least ``group_min_devices``
(a handful of returns is no storm); a device whose peers reported through its silence
stays its own dropout alert. Returns left over (another outage, at another time, in the same
batch) are judged again at their own instant.

The instant is tried near the start, middle and end of the overlap and the one that
folds the most returns is kept: near the start, peers that reported just before the
outage do not look quiet yet; near the end, some may already be back.

Limits: a device is known only by its newest reading before the batch and the batch's
own readings, so a peer whose newest reading came after the instant is not judged (it
may or may not have reported then). A batch spanning less time than the silences (the
usual case at high rates) therefore judges mostly from the returns themselves, and the
fewest-devices thresholds (``group_min_devices``, ``region_min_devices``) are what keep
independent dropouts that happen to end in one batch apart. Returns spread over many
batches after an outage may leave a batch's tail with too few returns to fold; those
are alerted one by one and fold downstream into the region's open storm incident
(``scheduler.correlation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from scheduler.anomaly_kind import DROPOUT
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import STATE_FIELDS
from scheduler.dropout_fold import (
    FoldConfig,
    FoldedSilences,
    SilenceEvent,
    fold_silences,
    silence_entries,
)
from scheduler.model import Batch
from scheduler.registry import Registry

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
IDX = npt.NDArray[np.intp]
BOOL = npt.NDArray[np.bool_]

_K = len(STATE_FIELDS)
_COUNT = STATE_FIELDS.index("count")
_LAST_TS = STATE_FIELDS.index("last_ts")
_GAP_LOG = STATE_FIELDS.index("gap_log_s")

#: Where in the overlap of the silences the outage's instant is tried (share of its span).
_TRIED_AT = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class FoldedReturns:
    """The returns (positions in the ``returns`` given) alerted alone and those folded."""

    individual: IDX
    #: Members are positions in ``returns``.
    events: tuple[SilenceEvent, ...]
    #: Per return: the device's last reading before its silence (event time).
    silent_since_ts: F64


@dataclass(frozen=True)
class _Examined:
    """Per examined device (state row): its usual quiet limit, and its readings' times."""

    limit_s: F64
    prior_last_ts: F64
    reading_row: IDX
    reading_ts: F64


def fold_returns(
    states: F64,
    device_index: IDX,
    ts: F64,
    returns: IDX,
    device_group: I64,
    config: DetectorConfig,
    fold: FoldConfig | None = None,
) -> FoldedReturns:
    """Split the readings ``returns`` (positions in the batch whose readings ended a
    silence) into events and individual dropouts.

    ``states`` are the batch's device rows as loaded (before screening), ``device_index``
    maps each reading to its row, ``ts`` is each reading's event time and
    ``device_group`` each row's group (-1 unknown)."""
    cfg = fold or FoldConfig()
    returns = np.asarray(returns, dtype=np.intp)
    examined = _examine(states, device_index, ts, config, cfg)
    since = _silent_since(examined, device_index, ts, returns)
    # Only a silence of positive length is an interval to overlap (a return always is).
    left = np.flatnonzero(since < ts[returns]).astype(np.intp)
    alone = np.flatnonzero(~(since < ts[returns])).astype(np.intp)
    events: list[SilenceEvent] = []
    while left.size:
        folded = _fold_at_common_silence(
            examined, device_index[returns[left]], since[left], ts[returns[left]], device_group, cfg
        )
        if not folded.events:
            break
        for event in folded.events:
            events.append(SilenceEvent(event.group, left[event.members]))
        left = left[folded.individual]
    individual = np.sort(np.concatenate([alone, left])).astype(np.intp)
    return FoldedReturns(individual=individual, events=tuple(events), silent_since_ts=since)


def fold_alerted_returns(
    batch: Batch,
    states: F64,
    device_index: npt.NDArray[np.integer[Any]],
    devices: npt.NDArray[np.uint64],
    alert_rows: IDX,
    alert_kinds: npt.NDArray[np.int8],
    config: DetectorConfig,
    registry: Registry | None = None,
    fold: FoldConfig | None = None,
) -> tuple[BOOL, list[dict[str, Any]]]:
    """Screening's alerts (``alert_rows`` of ``batch``, their kinds) with the returns folded:
    which stay device alerts, and the ``silences`` entries (``silence_entries``) the others
    became. ``devices`` are the state rows' ids; groups come from ``registry`` (none: the
    region alone is judged)."""
    returns = alert_rows[alert_kinds == DROPOUT]
    if not returns.size:
        return np.ones(alert_rows.size, dtype=np.bool_), []
    group = np.full(devices.size, -1, dtype=np.int64)
    if registry is not None:
        at = registry.lookup(devices)
        group = np.where(at >= 0, registry.group[np.maximum(at, 0)], -1).astype(np.int64)
    index = np.asarray(device_index, dtype=np.intp)
    folded = fold_returns(states, index, batch.ts, returns, group, config, fold)
    silences = silence_entries(batch.device_id[returns], folded.silent_since_ts, folded.events)
    keep = (alert_kinds != DROPOUT) | np.isin(alert_rows, returns[folded.individual])
    return keep, silences


def fold_batch_returns(
    examined_group: I64, examined_quiet: BOOL, return_group: I64, fold: FoldConfig | None = None
) -> FoldedSilences:
    """Screening's fold of one batch's returns judged at one instant: ``fold_silences`` over
    the devices examined there (``examined_group``, ``examined_quiet``), keeping only events
    of at least ``group_min_devices`` returns (a handful of returns is no storm, however
    quiet their peers look). The simulator folds its reconnects through this too."""
    cfg = fold or FoldConfig()
    folded = fold_silences(examined_group, examined_quiet, return_group, cfg)
    events = tuple(e for e in folded.events if e.members.size >= cfg.group_min_devices)
    everyone = np.arange(np.asarray(return_group).size, dtype=np.intp)
    return FoldedSilences(np.setdiff1d(everyone, _members_of(events)), events)


def common_silence_ts(since_ts: F64, until_ts: F64) -> tuple[float, float]:
    """The span where most of the silences (``since_ts``, ``until_ts``) overlap; the
    latest such span when several tie."""
    bounds = np.concatenate([since_ts, until_ts])
    step = np.concatenate([np.ones(since_ts.size), -np.ones(until_ts.size)])
    # At equal times an end comes before a start: silences that only touch do not overlap.
    order = np.lexsort((step, bounds))
    cover = np.cumsum(step[order])
    best = int(np.flatnonzero(cover == cover.max())[-1])
    return float(bounds[order][best]), float(bounds[order][best + 1])


def _examine(
    states: F64, device_index: IDX, ts: F64, config: DetectorConfig, cfg: FoldConfig
) -> _Examined:
    cells = states.reshape(states.shape[0], -1, _K)
    heard = cells[:, :, _COUNT] > 0
    last_ts = np.max(np.where(heard, cells[:, :, _LAST_TS], -np.inf), axis=1, initial=-np.inf)
    usable = (cells[:, :, _COUNT] >= config.dropout_warmup_readings) & np.isfinite(
        cells[:, :, _GAP_LOG]
    )
    gap_s = np.min(np.where(usable, np.exp(cells[:, :, _GAP_LOG]), np.inf), axis=1, initial=np.inf)
    # Devices still warming up have no usual interval: they are not judged (limit inf).
    limit = np.where(
        np.isfinite(gap_s), np.maximum(cfg.quiet_factor * gap_s, config.dropout_min_s), np.inf
    )
    return _Examined(limit, last_ts, np.asarray(device_index, dtype=np.intp), ts)


def _silent_since(examined: _Examined, device_index: IDX, ts: F64, returns: IDX) -> F64:
    """Each return's previous reading of its device: in the batch, else the stored one."""
    order = np.lexsort((ts, device_index))
    row, at = device_index[order], ts[order]
    same = np.r_[False, row[1:] == row[:-1]]
    previous = np.where(same, np.r_[-np.inf, at[:-1]], examined.prior_last_ts[row])
    since = np.empty(ts.size)
    since[order] = previous
    return since[returns]


def _gap_at(examined: _Examined, at_ts: float) -> tuple[F64, F64]:
    """Per device, the silence around ``at_ts`` as far as it is known: from its newest
    reading at or before it (NaN when none is known) to its next reading (inf when none
    is known yet)."""
    prior, rows, ts = examined.prior_last_ts, examined.reading_row, examined.reading_ts
    last = np.where(prior <= at_ts, prior, -np.inf)
    after = np.where(prior > at_ts, prior, np.inf)
    before = ts <= at_ts
    np.maximum.at(last, rows[before], ts[before])
    np.minimum.at(after, rows[~before], ts[~before])
    return np.where(np.isfinite(last), last, np.nan), after


def _fold_at_common_silence(
    examined: _Examined,
    return_row: IDX,
    since_ts: F64,
    until_ts: F64,
    device_group: I64,
    cfg: FoldConfig,
) -> _FoldedAt:
    lo, hi = common_silence_ts(since_ts, until_ts)
    best: _FoldedAt | None = None
    for share in _TRIED_AT:
        # Strictly inside the span, so the silences that make it all cover the instant.
        at_ts = lo + (hi - lo) * min(max(share, 0.01), 0.99)
        last_ts, next_ts = _gap_at(examined, at_ts)
        silence_s = at_ts - last_ts
        with np.errstate(invalid="ignore"):
            limit_s = examined.limit_s
            # Quiet: silent past its limit at the instant, or through a gap around it longer
            # than its limit (a fleet slowed down is silent together though no instant finds
            # most devices past their limit); a device heard since, after a short gap, was
            # reporting; one silent briefly with no reading since is not known yet.
            long_gap = (next_ts - last_ts > limit_s) & (silence_s <= cfg.together_s)
            quiet = np.isfinite(limit_s) & ((silence_s > limit_s) | long_gap)
            judged = np.isfinite(silence_s) & np.isfinite(limit_s) & (quiet | np.isfinite(next_ts))
            quiet &= judged & (silence_s <= cfg.together_s)
        covering = (since_ts < at_ts) & (until_ts > at_ts)
        # A device whose own silence covers the instant is quiet at it, however short
        # the overlap is next to its usual interval.
        judged[return_row[covering]] = True
        quiet[return_row[covering]] = True
        together = np.flatnonzero(covering)
        folded = fold_batch_returns(
            device_group[judged], quiet[judged], device_group[return_row[together]], cfg
        )
        events = tuple(SilenceEvent(e.group, together[e.members]) for e in folded.events)
        candidate = _FoldedAt(
            individual=np.setdiff1d(np.arange(since_ts.size, dtype=np.intp), _members_of(events)),
            events=events,
        )
        if best is None or candidate.folded > best.folded:
            best = candidate
    assert best is not None
    return best


@dataclass(frozen=True)
class _FoldedAt:
    """One instant's fold: positions (in the returns judged) alone, and events."""

    individual: IDX
    events: tuple[SilenceEvent, ...]

    @property
    def folded(self) -> int:
        return sum(int(e.members.size) for e in self.events)


def _members_of(events: tuple[SilenceEvent, ...]) -> IDX:
    if not events:
        return np.zeros(0, dtype=np.intp)
    return np.concatenate([e.members for e in events])
