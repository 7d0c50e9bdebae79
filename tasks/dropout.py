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
when the device returns before a sweep saw it. A device folded into an event is
remembered until it is heard from; one still silent a dropout limit after its region and
group came back is alerted on its own then (``scheduler.dropout_fold.settle_folded``):
it died during the outage. One that left the fleet or the region meanwhile is
forgotten when the sweep's passes end without finding it (``DropoutStore.end_pass``).

One sweep of a region runs at a time: sweeps go out every 2 s and are retried, and two
pool processes or replicas may take them together, but the forgetting above holds only
for a cursor one sweep walks. A sweep that finds the region's lease held
(``DropoutStore.claim_sweep``) does nothing; the next one carries on from the cursor.

A worker killed between writing the marks and publishing loses those alerts: the
sweep prefers at most once, because a duplicate dropout alert per sweep would be
the worse failure for a fleet with many silent devices.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.runtime import Runtime
from scheduler import defaults
from scheduler.anomaly_kind import DROPOUT
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import STATE_BYTES, pack_states, unpack_states
from scheduler.dropout_fold import (
    NO_EVENT,
    FoldConfig,
    SilenceEvent,
    fold_silences,
    join_recent_events,
    outage_over,
    quiet_devices,
    settle_folded,
    silence_entries,
)
from scheduler.dropout_sweep import find_dropouts
from scheduler.registry import Registry
from scheduler.silence_clock import DEFAULT_MAX_LAG_S, sweep_now_ts
from scheduler.wire import ALERTS_WIRE_VERSION, DROPOUT_TASK
from stores.dropout_store import DropoutStore, StatePage
from tasks.app import app
from tasks.base import WorkTask, timed
from tasks.limits import work_options
from tasks.screen import EmitAlerts

#: The histogram of sweep run times (ms), beside the detection latency stages.
SWEEP_RUN_STAGE = "run:dropout_sweep"
#: Kept for readers that name them here; the defaults live in ``scheduler.defaults``.
PAGE_SIZE = defaults.DROPOUT_PAGE_SIZE
MAX_PAGES = defaults.DROPOUT_MAX_PAGES
#: A sweep's lease of its region lapses after this (ms). A sweep stops paging after
#: DROPOUT_SWEEP_BUDGET_S (0.1 s, plus the page in hand and end_pass), so 5 s is ample;
#: a worker killed mid-sweep holds up its region's dropout detection no longer than
#: that (the task's 60 s hard limit would hold it up a minute). A sweep that does run
#: past its lease meets end_pass's one pass of lag, which keeps devices it found.
LEASE_MS = 5_000


@dataclass
class SweepResult:
    states: int = 0
    #: Devices alerted one by one.
    alerts: int = 0
    passes_finished: int = 0
    #: Silence events (a group or the region quiet together) and the devices they hold.
    silence_events: int = 0
    folded: int = 0
    #: Of ``alerts``: devices folded into an event and still silent after it was over.
    alerts_after_outage: int = 0
    #: Devices remembered as folded that the finished passes did not find (gone).
    forgotten: int = 0
    #: 1 when another sweep of the region was running: this one read nothing.
    skipped_busy: int = 0


@dataclass
class _Swept:
    """What the pages of one sweep found: who was examined, who fell silent, and how the
    devices remembered as folded into an event stand (``_Remembered``)."""

    examined_group: list[np.ndarray]
    examined_quiet: list[np.ndarray]
    ids: list[np.ndarray]
    last_ts: list[np.ndarray]
    group: list[np.ndarray]
    dropout_limit_s: list[np.ndarray]
    remembered: list[_Remembered]
    #: The pass the pages belong to (a sweep stops where its pass ends).
    pass_no: int = 0

    @classmethod
    def empty(cls) -> _Swept:
        return cls([], [], [], [], [], [], [])


@dataclass
class _Remembered:
    """Devices of a page remembered as folded into a silence event, as they stand now."""

    ids: np.ndarray
    group: np.ndarray
    since_ts: np.ndarray
    armed_ts: np.ndarray
    last_ts: np.ndarray
    dropout_limit_s: np.ndarray
    #: The instant its silence is measured up to (``scheduler.silence_clock``).
    now_ts: np.ndarray


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
    streams: tuple[str, ...],
    registry_version: int,
    home: np.ndarray,
    group: np.ndarray,
    now_ts: np.ndarray,
    config: DetectorConfig,
    fold: FoldConfig | None,
    swept: _Swept,
) -> None:
    """Adds to ``swept`` who on this page was examined (quiet or not) and who is newly
    silent, their marks written. None are while the stored registry is not
    ``registry_version`` (the snapshot ``home`` and ``streams`` came from): the next pass
    looks at them again with the registry reloaded."""
    swept.pass_no = page.pass_no
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
        assert page.folded_since_ts is not None and page.armed_ts is not None
        kept = np.isfinite(page.folded_since_ts[rows])
        if kept.any():
            swept.remembered.append(
                _Remembered(
                    page.device_ids[rows[kept]],
                    group[rows[kept]],
                    page.folded_since_ts[rows[kept]],
                    page.armed_ts[rows[kept]],
                    quiet.last_ts[kept],
                    quiet.dropout_limit_s[kept],
                    now_ts[rows[kept]],
                )
            )
        hit = find_dropouts(states, now_ts[rows], config)
        if not hit.index.size:
            continue
        marked = pack_states(states[hit.index])
        ids = page.device_ids[rows[hit.index]]
        written = store.mark(ids, [seen[i] for i in hit.index], marked, streams, registry_version)
        swept.ids.append(ids[written])
        swept.last_ts.append(quiet.last_ts[hit.index][written])
        swept.group.append(group[rows[hit.index]][written])
        swept.dropout_limit_s.append(quiet.dropout_limit_s[hit.index][written])


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
    budget_s: float = defaults.DROPOUT_SWEEP_BUDGET_S,
    elapsed_s: Callable[[], float] | None = None,
) -> SweepResult:
    """Sweep up to ``max_pages`` pages of ``region``'s pass, and no more once ``budget_s``
    has passed (``elapsed_s``: since the sweep began); emit one alerts payload.

    Silence is measured up to what screening has seen of each device's tier
    (``scheduler.silence_clock``), not up to ``now_ts``, unless screening is more than
    ``max_lag_s`` behind it or the region's screening has stopped. Devices quiet together
    fold into silence events (``fold``) before any is alerted on its own.

    Returns an empty result, having read nothing, while another sweep of ``region`` runs."""
    token = store.claim_sweep(region, LEASE_MS)
    if token is None:
        return SweepResult(skipped_busy=1)
    try:
        return _sweep_leased(
            store, registry, region, emit, now_ts, config, page_size, max_pages, max_lag_s,
            fold, budget_s, elapsed_s,
        )  # fmt: skip
    finally:
        store.release_sweep(region, token)


def _sweep_leased(
    store: DropoutStore,
    registry: Registry,
    region: str,
    emit: EmitAlerts,
    now_ts: float,
    config: DetectorConfig | None,
    page_size: int,
    max_pages: int,
    max_lag_s: float,
    fold: FoldConfig | None,
    budget_s: float,
    elapsed_s: Callable[[], float] | None,
) -> SweepResult:
    cfg = config or DetectorConfig()
    region_code = registry.topology.region_code(region)
    streams = registry.region_streams(region)  # whose write counts a mark checks
    result = SweepResult()
    swept = _Swept.empty()
    frontier = store.frontier(region)
    started = time.perf_counter()
    elapsed = elapsed_s or (lambda: time.perf_counter() - started)
    for pages in range(max_pages):
        if pages and elapsed() >= budget_s:
            break  # the rest of the pass is the next sweep's: premium may wait for this slot
        page = store.page(region, page_size)
        rows = registry.lookup(page.device_ids)
        known = np.maximum(rows, 0)
        home = (rows >= 0) & (registry.home_region[known] == region_code)
        clock = sweep_now_ts(
            frontier, registry.topology.tiers, registry.tier[known], now_ts, max_lag_s
        )
        group = registry.group[known].astype(np.int64)
        _sweep_page(page, store, streams, registry.version, home, group, clock, cfg, fold, swept)
        result.states += int(home.sum())
        if page.wrapped:
            result.passes_finished += 1
            break
    late_ids, late_ts = _settle_remembered(store, region, swept, fold)
    _emit(store, region, swept, fold, emit, result, late_ids, late_ts)
    result.alerts_after_outage = int(late_ids.size)
    if result.passes_finished:
        result.forgotten = store.end_pass(region, swept.pass_no, now_ts)
    return result


def _settle_remembered(
    store: DropoutStore, region: str, swept: _Swept, fold: FoldConfig | None
) -> tuple[np.ndarray, np.ndarray]:
    """Forget remembered devices heard from since; arm those still silent once their
    outage is over; return those still silent a dropout limit later (ids, last heard),
    forgotten as they are alerted on their own now."""
    none = (np.zeros(0, dtype=np.uint64), np.zeros(0))
    if not swept.remembered:
        return none
    cols = {
        name: np.concatenate([getattr(r, name) for r in swept.remembered])
        for name in ("ids", "group", "since_ts", "armed_ts", "last_ts", "dropout_limit_s", "now_ts")
    }
    over = outage_over(
        _joined(swept.examined_group, np.int64),
        _joined(swept.examined_quiet, np.bool_),
        cols["group"],
        fold,
    )
    # Judged by the silence clock, as the sweep judges silence: a backlog is no silence.
    clock = cols["now_ts"]
    fate = settle_folded(
        cols["since_ts"], cols["armed_ts"], cols["last_ts"], cols["dropout_limit_s"], over, clock
    )
    ids = cols["ids"].astype(np.uint64)
    store.arm(region, ids[fate.arm], clock[fate.arm])
    settled = fate.back | fate.alert
    store.forget(region, ids[settled])
    store.keep(region, ids[~settled], swept.pass_no)
    return ids[fate.alert], cols["last_ts"][fate.alert]


def _spans(events: list[SilenceEvent], last_ts: np.ndarray) -> dict[int, tuple[float, float]]:
    """Per event group, the first and last of its devices' last readings."""
    spans: dict[int, tuple[float, float]] = {}
    for event in events:
        ts = last_ts[event.members]
        lo, hi = spans.get(event.group, (float(ts.min()), float(ts.max())))
        spans[event.group] = (min(lo, float(ts.min())), max(hi, float(ts.max())))
    return spans


def _joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _emit(
    store: DropoutStore,
    region: str,
    swept: _Swept,
    fold: FoldConfig | None,
    emit: EmitAlerts,
    result: SweepResult,
    late_ids: np.ndarray,
    late_ts: np.ndarray,
) -> None:
    """Fold the newly silent devices, remember those folded, then send one payload: device
    alerts (with ``late_ids``, silent still after their outage) and events."""
    ids = _joined(swept.ids, np.uint64).astype(np.uint64)
    last_ts = _joined(swept.last_ts, np.float64)
    if not ids.size and not late_ids.size:
        return
    group = _joined(swept.group, np.int64)
    folded = fold_silences(
        _joined(swept.examined_group, np.int64),
        _joined(swept.examined_quiet, np.bool_),
        group,
        fold,
    )
    alone = folded.individual
    # The rest of an outage folded by earlier sweeps joins it, not alerted one by one.
    late = join_recent_events(
        group[alone], last_ts[alone], _joined(swept.dropout_limit_s, np.float64)[alone],
        store.events(region),
    )  # fmt: skip
    events = [
        *folded.events,
        *(SilenceEvent(int(k), alone[late == k]) for k in np.unique(late[late != NO_EVENT])),
    ]
    alone = alone[late == NO_EVENT]
    silences = silence_entries(ids, last_ts, events)
    in_events = np.setdiff1d(np.arange(ids.size), alone)
    store.fold(region, ids[in_events], last_ts[in_events], swept.pass_no)
    store.note_events(region, _spans(events, last_ts))
    alert_ids = np.concatenate([ids[alone], late_ids]).astype(np.uint64)
    alert_ts = np.concatenate([last_ts[alone], late_ts])
    emit(dropout_alerts(region, alert_ids, alert_ts, time.time(), silences))
    result.alerts = int(alert_ids.size)
    result.silence_events = len(silences)
    result.folded = int(in_events.size)


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
            "dropout_alerts_after_outage": result.alerts_after_outage,
            "dropout_forgotten_gone": result.forgotten,
            "dropout_sweeps_skipped_busy": result.skipped_busy,
        }
    )
    return result.alerts


@app.task(base=WorkTask, bind=True, **work_options(DROPOUT_TASK))
def process_dropout_sweep(self: WorkTask, payload: dict[str, Any]) -> int:
    """Returns the number of devices alerted as silent; past its retries the next
    scheduled sweep carries on from the stored cursor."""
    return int(self.work(timed(SWEEP_RUN_STAGE, handle_sweep), payload))
