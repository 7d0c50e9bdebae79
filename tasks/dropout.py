"""Dropout sweep: devices that fell silent are alerted while they are silent.

Screening sees a dropout only when the device comes back. ``iotsched.dropout_sweep``
(one per region on ``{region}.screen``, sent by the beat in ``workers.beat``) reads
up to ``MAX_PAGES`` pages of detector states (``stores.dropout_store``), keeps the
devices whose home region is this region, and runs ``find_dropouts``. The states it
marks are written back first (only if unchanged meanwhile), then the alerts of the
devices marked go to ``{region}.anomaly`` in the screening task's alerts format, so
they fold into incidents like any other alert. A silence is reported once: by a
sweep (the mark), or by screening when the device returns before a sweep saw it.

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
from scheduler.detection import (
    DROPOUT,
    STATE_BYTES,
    DetectorConfig,
    find_dropouts,
    pack_states,
    unpack_states,
)
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
    alerts: int = 0
    passes_finished: int = 0


def dropout_alerts(
    region: str, device_ids: np.ndarray, last_ts: np.ndarray, emitted_ts: float
) -> dict[str, Any]:
    """An alerts payload (screening's wire format) for silent devices; event time = last heard.

    Its batch id is derived from the devices and silences, so the anomaly task folds
    a redelivered copy once.
    """
    ids = np.ascontiguousarray(device_ids, dtype="<u8")
    ts = np.ascontiguousarray(last_ts, dtype="<f8")
    digest = hashlib.sha1(ids.tobytes() + ts.tobytes(), usedforsecurity=False).hexdigest()[:16]
    return {
        "v": ALERTS_WIRE_VERSION,
        "batch_id": f"dropout:{region}:{digest}",
        "region": region,
        "n": int(ids.size),
        "device_id": ids.tobytes(),
        "ts": ts.tobytes(),
        "kind": np.full(ids.size, DROPOUT, dtype="i1").tobytes(),
        "emitted_ts": emitted_ts,
    }


def _sweep_page(
    page: StatePage,
    store: DropoutStore,
    home: np.ndarray,
    now_ts: np.ndarray,
    config: DetectorConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """(device ids, last-heard ts) newly silent on this page, their marks written."""
    found_ids: list[np.ndarray] = [np.zeros(0, dtype=np.uint64)]
    found_ts: list[np.ndarray] = [np.zeros(0)]
    sizes = np.array([len(b) for b in page.blobs])
    for size in np.unique(sizes):
        if size == 0 or size % STATE_BYTES:
            continue  # not a state layout this detector writes
        rows = np.flatnonzero((sizes == size) & home)
        if not rows.size:
            continue
        seen = [page.blobs[i] for i in rows]
        states = unpack_states(list(seen), int(size) // STATE_BYTES)
        hit = find_dropouts(states, now_ts[rows], config)
        if not hit.index.size:
            continue
        marked = pack_states(states[hit.index])
        ids = page.device_ids[rows[hit.index]]
        written = store.mark(ids, [seen[i] for i in hit.index], marked)
        found_ids.append(ids[written])
        found_ts.append((now_ts[rows[hit.index]] - hit.silence_s)[written])
    return np.concatenate(found_ids), np.concatenate(found_ts)


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
) -> SweepResult:
    """Sweep up to ``max_pages`` pages of ``region``'s pass; emit one alerts payload.

    Silence is measured up to what screening has seen of each device's tier
    (``scheduler.silence_clock``), not up to ``now_ts``, unless screening is more than
    ``max_lag_s`` behind it."""
    cfg = config or DetectorConfig()
    region_code = registry.topology.region_code(region)
    result = SweepResult()
    ids_all: list[np.ndarray] = []
    ts_all: list[np.ndarray] = []
    frontier = store.frontier(region)
    for _ in range(max_pages):
        page = store.page(region, page_size)
        rows = registry.lookup(page.device_ids)
        home = (rows >= 0) & (registry.home_region[np.maximum(rows, 0)] == region_code)
        tiers = registry.tier[np.maximum(rows, 0)]
        clock = sweep_now_ts(frontier, registry.topology.tiers, tiers, now_ts, max_lag_s)
        ids, last_ts = _sweep_page(page, store, home, clock, cfg)
        ids_all.append(ids)
        ts_all.append(last_ts)
        result.states += int(home.sum())
        if page.wrapped:
            result.passes_finished += 1
            break
    ids = np.concatenate(ids_all) if ids_all else np.zeros(0, dtype=np.uint64)
    if ids.size:
        emit(dropout_alerts(region, ids, np.concatenate(ts_all), time.time()))
    result.alerts = int(ids.size)
    return result


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
        }
    )
    return result.alerts


@app.task(base=WorkTask, bind=True, **work_options(DROPOUT_TASK))
def process_dropout_sweep(self: WorkTask, payload: dict[str, Any]) -> int:
    """Returns the number of devices alerted as silent; past its retries the next
    scheduled sweep carries on from the stored cursor."""
    return int(self.work(handle_sweep, payload))
