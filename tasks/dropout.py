"""Dropout sweep: devices that fell silent are alerted while they are silent.

Screening sees a dropout only when the device comes back. ``iotsched.dropout_sweep``
(one per region on ``{region}.screen``, sent by the beat in ``workers.beat``) reads
up to ``MAX_PAGES`` pages of detector states (``stores.dropout_store``), keeps the
devices whose home region is this region, and runs ``find_dropouts``. The states it
marks are written back first (only if unchanged meanwhile). Before anything is
alerted, the devices marked are folded (``scheduler.dropout_fold``): a region or a group
whose devices are mostly quiet together is one silence event (an outage of a gateway,
a site, the network), carried as one ``silences`` entry with its device count; only
the rest, devices silent among peers that report, become device alerts. Both go to
``{region}.anomaly`` in the screening task's alerts format, so they fold into
incidents like any other alert, and a folded silence never books accelerated work.
A silence is reported once: by a sweep (the mark, folded or not), or by screening
when the device returns before a sweep saw it.

A worker killed between writing the marks and publishing loses those alerts: the
sweep prefers at most once, because a duplicate dropout alert per sweep would be
the worse failure for a fleet with many silent devices.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.runtime import Runtime
from scheduler import defaults
from scheduler.anomaly_kind import DROPOUT
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import STATE_BYTES, pack_states, unpack_states
from scheduler.dropout_fold import (
    FoldConfig,
    fold_silences,
    quiet_devices,
    silence_entries,
)
from scheduler.dropout_sweep import find_dropouts
from scheduler.registry import Registry
from scheduler.silence_clock import DEFAULT_MAX_LAG_S, sweep_now_ts
from scheduler.wire import ALERTS_WIRE_VERSION, DROPOUT_TASK
from stores.dropout_store import DropoutStore, StatePage
from tasks.app import app
from tasks.base import WorkTask
from tasks.limits import work_options
from tasks.screen import EmitAlerts

#: Kept for readers that name them here; the defaults live in ``scheduler.defaults``.
PAGE_SIZE = defaults.DROPOUT_PAGE_SIZE
MAX_PAGES = defaults.DROPOUT_MAX_PAGES


@dataclass
class SweepResult:
    states: int = 0
    #: Devices alerted one by one.
    alerts: int = 0
    passes_finished: int = 0
    #: Silence events (a group or the region quiet together) and the devices they hold.
    silence_events: int = 0
    folded: int = 0


@dataclass
class _Swept:
    """What the pages of one sweep found: who was examined, and who fell silent."""

    examined_group: list[np.ndarray]
    examined_quiet: list[np.ndarray]
    ids: list[np.ndarray]
    last_ts: list[np.ndarray]
    group: list[np.ndarray]

    @classmethod
    def empty(cls) -> _Swept:
        return cls([], [], [], [], [])


def dropout_alerts(
    region: str,
    device_ids: np.ndarray,
    last_ts: np.ndarray,
    emitted_ts: float,
    silences: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An alerts payload (screening's wire format) for silent devices; event time = last heard.

    ``silences`` (``silence_entries``) ride along as one entry per folded event. Its batch
    id is derived from the devices, their last-heard times and the events, so the anomaly
    task folds a redelivered copy once.
    """
    ids = np.ascontiguousarray(device_ids, dtype="<u8")
    ts = np.ascontiguousarray(last_ts, dtype="<f8")
    events = repr(silences or []).encode()
    digest = hashlib.sha1(ids.tobytes() + ts.tobytes() + events, usedforsecurity=False)
    payload: dict[str, Any] = {
        "v": ALERTS_WIRE_VERSION,
        "batch_id": f"dropout:{region}:{digest.hexdigest()[:16]}",
        "region": region,
        "n": int(ids.size),
        "device_id": ids.tobytes(),
        "ts": ts.tobytes(),
        "kind": np.full(ids.size, DROPOUT, dtype="i1").tobytes(),
        "emitted_ts": emitted_ts,
    }
    if silences:
        payload["silences"] = silences
    return payload


def _sweep_page(
    page: StatePage,
    store: DropoutStore,
    home: np.ndarray,
    group: np.ndarray,
    now_ts: np.ndarray,
    config: DetectorConfig,
    fold: FoldConfig | None,
    swept: _Swept,
) -> None:
    """Adds to ``swept`` who on this page was examined (quiet or not) and who is newly
    silent, their marks written."""
    sizes = np.array([len(b) for b in page.blobs])
    for size in np.unique(sizes):
        if size == 0 or size % STATE_BYTES:
            continue  # not a state layout this detector writes
        rows = np.flatnonzero((sizes == size) & home)
        if not rows.size:
            continue
        seen = [page.blobs[i] for i in rows]
        states = unpack_states(list(seen), int(size) // STATE_BYTES)
        # Who is quiet is read before the marks: a device marked now is quiet as well.
        quiet = quiet_devices(states, now_ts[rows], config, fold)
        swept.examined_group.append(group[rows[quiet.judged]])
        swept.examined_quiet.append(quiet.quiet[quiet.judged])
        hit = find_dropouts(states, now_ts[rows], config)
        if not hit.index.size:
            continue
        marked = pack_states(states[hit.index])
        ids = page.device_ids[rows[hit.index]]
        written = store.mark(ids, [seen[i] for i in hit.index], marked)
        swept.ids.append(ids[written])
        swept.last_ts.append((now_ts[rows[hit.index]] - hit.silence_s)[written])
        swept.group.append(group[rows[hit.index]][written])


def sweep(
    store: DropoutStore,
    registry: Registry,
    region: str,
    emit: EmitAlerts,
    now_ts: float,
    config: DetectorConfig | None = None,
    page_size: int = PAGE_SIZE,
    max_pages: int = MAX_PAGES,
    max_lag_s: float = DEFAULT_MAX_LAG_S,
    fold: FoldConfig | None = None,
) -> SweepResult:
    """Sweep up to ``max_pages`` pages of ``region``'s pass; emit one alerts payload.

    Silence is measured up to what screening has seen of each device's tier
    (``scheduler.silence_clock``), not up to ``now_ts``, unless screening is more than
    ``max_lag_s`` behind it or the region's screening has stopped. Devices quiet together
    fold into silence events (``fold``) before any is alerted on its own."""
    cfg = config or DetectorConfig()
    region_code = registry.topology.region_code(region)
    result = SweepResult()
    swept = _Swept.empty()
    frontier = store.frontier(region)
    for _ in range(max_pages):
        page = store.page(region, page_size)
        rows = registry.lookup(page.device_ids)
        known = np.maximum(rows, 0)
        home = (rows >= 0) & (registry.home_region[known] == region_code)
        clock = sweep_now_ts(
            frontier, registry.topology.tiers, registry.tier[known], now_ts, max_lag_s
        )
        group = registry.group[known].astype(np.int64)
        _sweep_page(page, store, home, group, clock, cfg, fold, swept)
        result.states += int(home.sum())
        if page.wrapped:
            result.passes_finished += 1
            break
    _emit(region, swept, fold, emit, result)
    return result


def _emit(
    region: str, swept: _Swept, fold: FoldConfig | None, emit: EmitAlerts, result: SweepResult
) -> None:
    """Fold the newly silent devices, then send one payload: device alerts and events."""
    if not swept.ids:
        return
    ids, last_ts = np.concatenate(swept.ids), np.concatenate(swept.last_ts)
    if not ids.size:
        return
    folded = fold_silences(
        np.concatenate(swept.examined_group),
        np.concatenate(swept.examined_quiet),
        np.concatenate(swept.group),
        fold,
    )
    silences = silence_entries(ids, last_ts, folded.events)
    alone = folded.individual
    emit(dropout_alerts(region, ids[alone], last_ts[alone], time.time(), silences))
    result.alerts = int(alone.size)
    result.silence_events = len(silences)
    result.folded = int(ids.size - alone.size)


def handle_sweep(rt: Runtime, payload: dict[str, Any]) -> int:
    """Returns the number of devices alerted as silent."""
    region = str(payload["region"])
    emit = rt.publisher.send_alerts
    result = sweep(rt.stores.dropout, rt.registry.get(), region, emit, rt.clock())
    rt.stores.state.incr_counters(
        {
            "dropout_swept_states": result.states,
            "dropout_alerts": result.alerts,
            "dropout_passes": result.passes_finished,
            "dropout_silence_events": result.silence_events,
            "dropout_folded": result.folded,
        }
    )
    return result.alerts


@app.task(base=WorkTask, bind=True, **work_options(DROPOUT_TASK))
def process_dropout_sweep(self: WorkTask, payload: dict[str, Any]) -> int:
    """Returns the number of devices alerted as silent; past its retries the next
    scheduled sweep carries on from the stored cursor."""
    return int(self.work(handle_sweep, payload))
