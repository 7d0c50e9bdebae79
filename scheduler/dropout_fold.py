"""Which swept silences are one event, and which are a device's own: folded before alerting.

A gateway, a site or a network link that goes down silences every device behind it at
once. Alerted one by one, such an outage is thousands of dropout alerts for one fault,
and each becomes work downstream. So the sweep (``tasks.dropout``) folds before it
alerts: among the devices it examined in one region, it counts those *quiet* now
(silent past ``quiet_factor`` x their usual interval, or silent since a silence already
reported) and

- when ``region_share`` of the region's examined devices are quiet (and at least
  ``region_min_devices``), the region's stream has stopped: every newly silent device
  of it folds into one region-wide event;
- otherwise, per group (a gateway, a site): when ``group_share`` of the group's examined
  devices are quiet (and at least ``group_min_devices``), its newly silent devices fold
  into one event for that group;
- every other newly silent device is alerted on its own: a device silent among peers
  that report is a true dropout.

Silences older than ``together_s`` are not counted as quiet: a device that died hours
ago is no part of an outage that starts now.

A device folded into an event is remembered (``stores.dropout_store``) until it is heard
from again. One that stays silent once the event is over (its region and group report
again, ``outage_over``) has truly died during the outage: after its own dropout limit
counted from its peers' return (a late peer is not a dropout), it is alerted on its own
(``settle_folded``).

Quiet is a lower bar than the dropout limit (``DetectorConfig.dropout_factor``) so that
peers whose limits run out a little later still count as gone: an outage is recognised
from its first devices to cross their limit, not from a minority of them alerted one
by one first. Devices still warming up (no usable interval yet) are not examined.

Shares are taken over the devices examined in one sweep, not the group's whole
population: a sweep reads part of a pass, and the part it reads is a sample of every
group (SCAN order), so a group half silent shows half silent in any sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from scheduler.alert import WHOLE_REGION
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import STATE_FIELDS

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
IDX = npt.NDArray[np.intp]
BOOL = npt.NDArray[np.bool_]

#: The group of a region-wide silence event.
REGION_WIDE = -1
#: Device ids a silence event carries as its sample (the correlator keeps 10).
SILENCE_SAMPLE = 10

_K = len(STATE_FIELDS)
_COUNT = STATE_FIELDS.index("count")
_LAST_TS = STATE_FIELDS.index("last_ts")
_MARK_TS = STATE_FIELDS.index("dropout_mark_ts")
_GAP_LOG = STATE_FIELDS.index("gap_log_s")


@dataclass(frozen=True)
class FoldConfig:
    """When silent devices are one event rather than each its own (see module doc)."""

    #: Share of a group's examined devices quiet together that makes the group's silence
    #: one event. Half: a gateway outage silences all its devices, while independent
    #: dropouts reaching half a group at once would already be a fault of the group.
    group_share: float = 0.5
    #: Fewest quiet devices of a group that fold: two silent devices of three are each
    #: alerted, as a handful of dropouts is no storm.
    group_min_devices: int = 10
    #: Share of a region's examined devices quiet together: the region's ingest stopped.
    region_share: float = 0.5
    region_min_devices: int = 50
    #: A device is quiet after this many of its usual intervals without a reading (the
    #: dropout limit is ``DetectorConfig.dropout_factor`` of them, 5 by default).
    quiet_factor: float = 2.0
    #: ...and until it has been silent this long (seconds): devices that died hours ago
    #: (kept until compaction, ``defaults.SILENT_DEVICE_S``) are no part of an event now,
    #: and must not make a group's fresh dropouts look like an outage.
    together_s: float = 3600.0


@dataclass(frozen=True)
class Quiet:
    """Per examined device (state row): whether it can be judged, and whether it is quiet."""

    judged: BOOL
    quiet: BOOL
    #: Newest reading over all metrics (event time); -inf for a device never heard.
    last_ts: F64
    #: The silence past which it is a dropout (``find_dropouts``' limit); inf if not judged.
    dropout_limit_s: F64


def quiet_devices(
    states: F64,
    now_ts: float | F64,
    config: DetectorConfig,
    fold: FoldConfig | None = None,
) -> Quiet:
    """Which devices (state rows) are quiet at ``now_ts``; read before the sweep marks them.

    A device is judged once its interval is known (``dropout_warmup_readings``), as
    ``scheduler.dropout_sweep.find_dropouts`` judges it; one whose silence was already reported
    (its mark is its last reading) is quiet still, since nothing came since.
    """
    n_devices = states.shape[0]
    cells = states.reshape(n_devices, -1, _K)
    heard = cells[:, :, _COUNT] > 0
    last_ts = np.max(np.where(heard, cells[:, :, _LAST_TS], -np.inf), axis=1, initial=-np.inf)
    usable = (cells[:, :, _COUNT] >= config.dropout_warmup_readings) & np.isfinite(
        cells[:, :, _GAP_LOG]
    )
    gap_s = np.min(np.where(usable, np.exp(cells[:, :, _GAP_LOG]), np.inf), axis=1, initial=np.inf)
    judged = np.isfinite(gap_s) & np.isfinite(last_ts)
    reported = np.any(heard & (cells[:, :, _MARK_TS] == cells[:, :, _LAST_TS]), axis=1)
    cfg = fold or FoldConfig()
    limit = np.maximum(cfg.quiet_factor * gap_s, config.dropout_min_s)
    with np.errstate(invalid="ignore"):
        silence = np.asarray(now_ts) - last_ts
        quiet = judged & ((silence > limit) | reported) & (silence <= cfg.together_s)
    dropout_limit = np.maximum(config.dropout_factor * gap_s, config.dropout_min_s)
    return Quiet(judged=judged, quiet=quiet, last_ts=last_ts, dropout_limit_s=dropout_limit)


@dataclass(frozen=True)
class SilenceEvent:
    """Newly silent devices of one group (``REGION_WIDE``: the whole region) as one event."""

    group: int
    #: Indices into the newly silent devices given to ``fold_silences``.
    members: IDX


@dataclass(frozen=True)
class FoldedSilences:
    #: Indices of newly silent devices to alert one by one.
    individual: IDX
    events: tuple[SilenceEvent, ...]


def fold_silences(
    examined_group: I64,
    examined_quiet: BOOL,
    silent_group: I64,
    config: FoldConfig | None = None,
) -> FoldedSilences:
    """Split the newly silent devices (their groups: ``silent_group``) into events and
    individual dropouts, judged by how many of the examined devices (``examined_group``,
    ``examined_quiet``, one entry per judged device of the region) are quiet together."""
    cfg = config or FoldConfig()
    silent_group = np.asarray(silent_group, dtype=np.int64)
    everyone = np.arange(silent_group.size, dtype=np.intp)
    n_quiet = int(np.count_nonzero(examined_quiet))
    if silent_group.size and _together(
        n_quiet, examined_group.size, cfg.region_share, cfg.region_min_devices
    ):
        return FoldedSilences(np.zeros(0, np.intp), (SilenceEvent(REGION_WIDE, everyone),))
    groups, population = np.unique(np.asarray(examined_group, dtype=np.int64), return_counts=True)
    quiet_per_group = np.zeros(groups.size, dtype=np.int64)
    np.add.at(quiet_per_group, np.searchsorted(groups, examined_group[examined_quiet]), 1)
    events: list[SilenceEvent] = []
    folded = np.zeros(silent_group.size, dtype=np.bool_)
    for g in np.unique(silent_group).tolist():
        at = int(np.searchsorted(groups, g))
        known = at < groups.size and groups[at] == g
        quiet = int(quiet_per_group[at]) if known else 0
        seen = int(population[at]) if known else 0
        if _together(quiet, seen, cfg.group_share, cfg.group_min_devices):
            members = everyone[silent_group == g]
            folded[members] = True
            events.append(SilenceEvent(int(g), members))
    return FoldedSilences(everyone[~folded], tuple(events))


def silence_entries(
    device_ids: npt.NDArray[np.uint64], last_ts: F64, events: Sequence[SilenceEvent]
) -> list[dict[str, Any]]:
    """The ``silences`` column of an alerts payload (``scheduler.alert.Silence`` on the
    wire): one entry per event, whose members index ``device_ids`` and ``last_ts`` (each
    device's last reading before its silence)."""
    entries = []
    for event in events:
        ts = last_ts[event.members]
        sample = device_ids[event.members[:SILENCE_SAMPLE]]
        entries.append(
            {
                "group": WHOLE_REGION if event.group == REGION_WIDE else str(event.group),
                "devices": int(event.members.size),
                "first_ts": float(ts.min()),
                "last_ts": float(ts.max()),
                "sample": [int(d) for d in sample.tolist()],
            }
        )
    return entries


#: ``join_recent_events``: the device belongs to no recent event.
NO_EVENT = -2


def join_recent_events(
    group: I64, last_ts: F64, dropout_limit_s: F64, spans: Mapping[int, tuple[float, float]]
) -> I64:
    """Per newly silent device that ``fold_silences`` left alone, the recent event it belongs
    to (a key of ``spans``: its group, or ``REGION_WIDE``), or ``NO_EVENT``.

    A sweep reads part of a pass, so an outage's devices are found over several sweeps,
    and the last ones often after their peers came back (their region no longer quiet
    together). One whose last reading falls inside the span of last readings of an event
    of its group or region (``spans``, as folded so far), widened by its own dropout
    limit, went silent with that outage, not among reporting peers: it joins the event,
    and is alerted alone later only if it stays silent (``settle_folded``)."""
    out = np.full(np.asarray(group).size, NO_EVENT, dtype=np.int64)
    # A group's own event first; the region's for whoever is left.
    for key in sorted(spans, key=lambda k: k == REGION_WIDE):
        lo, hi = spans[key]
        inside = (last_ts >= lo - dropout_limit_s) & (last_ts <= hi + dropout_limit_s)
        mine = inside if key == REGION_WIDE else inside & (group == key)
        out = np.where((out == NO_EVENT) & mine, key, out)
    return out


@dataclass(frozen=True)
class FoldedFate:
    """What becomes of devices remembered as folded into an event (``settle_folded``)."""

    #: Heard from since: their silence ended with the event's; forget them.
    back: BOOL
    #: Still silent, and their peers are back now: their own dropout limit starts.
    arm: BOOL
    #: Still silent a whole dropout limit after their peers came back: alert each alone.
    alert: BOOL


def outage_over(
    examined_group: I64, examined_quiet: BOOL, group: I64, config: FoldConfig | None = None
) -> BOOL:
    """Per device of ``group``, whether the event it was folded into has ended: its region
    is not quiet together and its group, seen in this sweep, is not mostly quiet (no
    fewest-devices bar: a small group still all silent is still out)."""
    cfg = config or FoldConfig()
    examined_group = np.asarray(examined_group, dtype=np.int64)
    n_quiet = int(np.count_nonzero(examined_quiet))
    if _together(n_quiet, examined_group.size, cfg.region_share, cfg.region_min_devices):
        return np.zeros(np.asarray(group).size, dtype=np.bool_)
    groups, population = np.unique(examined_group, return_counts=True)
    if not groups.size:
        return np.zeros(np.asarray(group).size, dtype=np.bool_)
    quiet_per_group = np.zeros(groups.size, dtype=np.int64)
    np.add.at(quiet_per_group, np.searchsorted(groups, examined_group[examined_quiet]), 1)
    at = np.minimum(np.searchsorted(groups, group), groups.size - 1)
    seen = groups[at] == group
    still_out = quiet_per_group[at] >= cfg.group_share * population[at]
    return np.asarray(seen & ~still_out, dtype=np.bool_)


def settle_folded(
    folded_since_ts: F64,
    armed_ts: F64,
    last_ts: F64,
    dropout_limit_s: F64,
    over: BOOL,
    now_ts: float | F64,
) -> FoldedFate:
    """Judge devices remembered as folded into a silence event (``folded_since_ts``: their
    last reading then; NaN: not remembered): back when heard from since; once the event is
    ``over`` (``outage_over``) a device still silent is armed at ``now_ts``, and alerted
    alone when it is still silent ``dropout_limit_s`` after that (``armed_ts``), as a
    device silent among reporting peers is a true dropout."""
    remembered = np.isfinite(folded_since_ts)
    back = remembered & (last_ts > folded_since_ts)
    silent = remembered & ~back & over
    with np.errstate(invalid="ignore"):
        due = now_ts - armed_ts >= dropout_limit_s
    return FoldedFate(back=back, arm=silent & np.isnan(armed_ts), alert=silent & due)


def _together(quiet: int, examined: int, share: float, min_devices: int) -> bool:
    return examined > 0 and quiet >= min_devices and quiet >= share * examined
