"""Load shapes for the benchmark, and what happened inside their disturbed window.

The producer is paced by the simulator's own load patterns (simulation.loads),
so a spike on real workers is the same spike the scenarios simulate.

The window's latency is taken over the readings *offered* inside it, whenever they
finish (``OfferWindow``): each routine batch holding such readings is followed in
the in-flight ledger until its routine task settles it, and each of those readings
counts from its first offer (a reading pushed back during the spike and taken after
it still counts, with its whole wait). The offered multiple is measured: readings the
source offered per second inside the window over the rate before it. Detection
inside the window is the difference of the detection histogram between the window's
start and the moment the screening queues drain after it.

Where the window's time went, by stage, each from a reading's first offer:
``published_ms`` until its routine batch was published (the gateway's loop, the
batcher's age limit, publishing), ``started_ms`` until the routine task holding it
started (adds the broker queue and the wait for a slot; recorded by the workers, taken
like detection from the histograms' difference), and ``latency_ms`` until processed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.producer import Publisher
from ingest.synthetic import SyntheticStream
from scheduler.latency import bucket_counts, counts_since, percentile_ms
from scheduler.model import SCREEN_PREMIUM_KIND, Batch, WorkClass, queue_name
from scheduler.routine import STARTED_STAGE
from simulation.loads import pattern_by_name
from stores.detector_store import detection_histogram
from stores.queue_depth import queue_depths

RESOLUTION_S = 0.01


@dataclass(frozen=True)
class PatternPace:
    """Cumulative readings to have offered by ``t`` seconds, from a named load pattern."""

    name: str
    base_rps: float
    horizon_s: float
    cumulative: np.ndarray
    #: [start, end) where the rate is above 1.5 × its median: the disturbance.
    window_s: tuple[float, float] | None
    peak_x: float

    @classmethod
    def named(cls, name: str, base_rps: float, horizon_s: float, seed: int = 0) -> PatternPace:
        pattern = pattern_by_name(name, seed=seed, base_rps=base_rps, horizon_s=horizon_s)
        t = np.arange(0.0, horizon_s, RESOLUTION_S)
        rate = pattern.total_rps(t)
        cumulative = np.concatenate(([0.0], np.cumsum(rate) * RESOLUTION_S))
        median = float(np.median(rate))
        hot = np.flatnonzero(rate > 1.5 * median)
        window = (float(t[hot[0]]), float(t[hot[-1]] + RESOLUTION_S)) if hot.size else None
        return cls(name, base_rps, horizon_s, cumulative, window, float(rate.max() / median))

    @property
    def readings(self) -> int:
        return int(self.cumulative[-1])

    def __call__(self, elapsed_s: float) -> float:
        i = min(int(elapsed_s / RESOLUTION_S), self.cumulative.size - 1)
        return float(self.cumulative[i])

    def offer_instants(self, first: int, n: int) -> np.ndarray:
        """Seconds from the start at which readings ``first .. first+n-1`` are due."""
        k = first + np.arange(n, dtype=np.float64) + 1.0
        return np.searchsorted(self.cumulative, k, side="left") * RESOLUTION_S


class WindowWatch:
    """Snapshots histograms at the window's start and after the screening drain."""

    def __init__(self, run_: Any, pace: PatternPace, started_ts: float) -> None:
        self.run = run_
        self.pace = pace
        self.started_ts = started_ts
        self._before: dict[str, dict[int, int]] = {}
        self._after: dict[str, dict[int, int]] = {}
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> WindowWatch:
        if self.pace.window_s is not None:
            self._thread.start()
        return self

    def _histograms(self) -> dict[str, dict[int, int]]:
        store = self.run.store
        tiers = self.run.settings.tiers
        out = {tier: store.latency_histogram("ingest", tier) for tier in tiers}
        for tier in tiers:
            out[f"{STARTED_STAGE}:{tier}"] = store.latency_histogram(STARTED_STAGE, tier)
        out["detection"] = detection_histogram(store.client, self.run.keys)
        return out

    def _screen_backlog(self) -> int:
        kinds = (SCREEN_PREMIUM_KIND, WorkClass.SCREEN.value)
        queues = [queue_name(r, k) for r in self.run.settings.regions for k in kinds]
        return sum(queue_depths(self.run.store.client, self.run.keys, queues).values())

    def _watch(self) -> None:
        assert self.pace.window_s is not None
        start, end = self.pace.window_s
        time.sleep(max(0.0, self.started_ts + start - time.time()))
        self._before = self._histograms()
        time.sleep(max(0.0, self.started_ts + end - time.time()))
        while self._screen_backlog() > 0:
            time.sleep(0.05)
        self._after = self._histograms()

    def report(
        self, offers: OfferWindow | None = None, timeout_s: float = 60.0
    ) -> dict[str, Any] | None:
        if self.pace.window_s is None:
            return None
        self._thread.join(timeout_s)
        delta = {
            k: counts_since(self._after.get(k, {}), self._before.get(k, {})) for k in self._after
        }
        figures = {k: _figures(h) for k, h in delta.items()}
        out: dict[str, Any] = {
            "window_s": list(self.pace.window_s),
            "pattern_peak_x": round(self.pace.peak_x, 2),
            "latency_ms": {k: v for k, v in figures.items() if k in self.run.settings.tiers},
            "detection_ms": figures.get("detection"),
            "started_ms": {
                tier: figures.get(f"{STARTED_STAGE}:{tier}") for tier in self.run.settings.tiers
            },
        }
        if offers is not None:
            out.update(offers.report(timeout_s))
        return out


class OfferWindow:
    """Latency of the readings first offered in [start_ts, end_ts), whenever they finish.

    Installed between a producer and its publisher (``install``): every routine batch
    holding window readings is kept with their first-offer times, and a thread asks
    the in-flight ledger every ``poll_s`` which of ``first_tier``'s batches are still in
    flight, and every ``SLOW_POLLS`` × ``poll_s`` which of the other tiers' are; a batch
    gone from it has been applied, so its window readings finished by then (latencies
    are upper bounds, late by at most the poll interval). The other tiers' batches wait
    seconds past capacity, and asking for each of them 50 times a second took CPU (and
    the GIL) from the producer it measures.
    """

    SLOW_POLLS = 10

    def __init__(
        self,
        run_: Any,
        start_ts: float,
        end_ts: float,
        poll_s: float = 0.02,
        first_tier: str = "premium",
    ) -> None:
        self.run = run_
        self.start_ts = start_ts
        self.end_ts = end_ts
        self.poll_s = poll_s
        self.first_tier = first_tier
        self._lock = threading.Lock()
        #: Batch id → (tier, first-offer times of its window readings): first tier, rest.
        self._first: dict[str, tuple[str, npt.NDArray[np.float64]]] = {}
        self._rest: dict[str, tuple[str, npt.NDArray[np.float64]]] = {}
        self._hist: dict[str, dict[int, int]] = {}
        self._published: dict[str, dict[int, int]] = {}
        self._offered_before = 0
        self._offered_inside = 0
        self._first_offer_ts: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def install(self, producer: Any, stream: SyntheticStream) -> OfferWindow:
        producer.publisher = _Recording(producer.publisher, self)
        chunk = stream.chunk

        def counted(n: int, now_ts: float) -> Any:
            self._count_offer(n, now_ts)
            return chunk(n, now_ts)

        stream.chunk = counted  # type: ignore[method-assign]
        self._thread.start()
        return self

    def _count_offer(self, n: int, now_ts: float) -> None:
        if self._first_offer_ts is None:
            self._first_offer_ts = now_ts
        if now_ts < self.start_ts:
            self._offered_before += n
        elif now_ts < self.end_ts:
            self._offered_inside += n

    def published(self, batches: list[Batch]) -> None:
        published_ts = time.time()
        with self._lock:
            for b in batches:
                inside = (b.ingest_ts >= self.start_ts) & (b.ingest_ts < self.end_ts)
                if inside.any():
                    offered = b.ingest_ts[inside].copy()
                    pending = self._first if b.tier == self.first_tier else self._rest
                    pending[b.batch_id] = (b.tier, offered)
                    h = self._published.setdefault(b.tier, {})
                    for k, c in bucket_counts((published_ts - offered) * 1000.0).items():
                        h[k] = h.get(k, 0) + c

    def _poll(self) -> None:
        polls = 0
        while not self._stop.is_set():
            self._settle(self._first)
            if polls % self.SLOW_POLLS == 0:
                self._settle(self._rest)
            polls += 1
            time.sleep(self.poll_s)

    def _settle(self, pending: dict[str, tuple[str, npt.NDArray[np.float64]]]) -> None:
        """Count the window readings of ``pending`` batches that left the ledger."""
        with self._lock:
            ids = list(pending)[:5_000]
        if not ids:
            return
        scores = self.run.store.client.zmscore(self.run.keys.inflight_since, ids)
        done_ts = time.time()
        with self._lock:
            for batch_id, score in zip(ids, scores, strict=True):
                if score is None:
                    tier, offered = pending.pop(batch_id)
                    h = self._hist.setdefault(tier, {})
                    for b, c in bucket_counts((done_ts - offered) * 1000.0).items():
                        h[b] = h.get(b, 0) + c

    def report(self, timeout_s: float) -> dict[str, Any]:
        """Waits (up to ``timeout_s``) for the window's batches to finish, then stops."""
        deadline = time.time() + timeout_s
        while (self._first or self._rest) and time.time() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(1.0)
        inside_s = self.end_ts - self.start_ts
        before_s = self.start_ts - (self._first_offer_ts or self.start_ts)
        inside_rps = self._offered_inside / inside_s
        before_rps = self._offered_before / before_s if before_s > 0 else None
        return {
            "offered_rps": round(inside_rps, 1),
            "offered_rps_before": None if before_rps is None else round(before_rps, 1),
            "offered_x": None if not before_rps else round(inside_rps / before_rps, 2),
            "latency_ms": {tier: _figures(h) for tier, h in sorted(self._hist.items())},
            "published_ms": {tier: _figures(h) for tier, h in sorted(self._published.items())},
            "unfinished_batches": len(self._first) + len(self._rest),
        }


class _Recording:
    """A publisher that tells an OfferWindow what it published.

    Whatever else the inner publisher offers (``screen_many`` above all: the producer
    screens the readings it holds back through it) is passed through unchanged. A
    wrapper that hid it turned screening of held readings off in every ``--pattern``
    run: millions held at the gateway, ``screened_while_held`` 0."""

    def __init__(self, inner: Publisher, window: OfferWindow) -> None:
        self.inner = inner
        self.window = window

    def __getattr__(self, name: str) -> Any:
        # Only called for what this class lacks: the inner publisher's own answer,
        # AttributeError included (the producer asks with getattr(..., None)).
        return getattr(self.inner, name)

    def publish(self, batch: Batch) -> None:
        self.publish_many([batch])

    def publish_many(self, batches: list[Batch]) -> None:
        publish_many = getattr(self.inner, "publish_many", None)
        if publish_many is not None:
            publish_many(batches)
        else:
            for b in batches:
                self.inner.publish(b)
        # After publishing: the ledger holds them, so "not in flight" means "applied".
        self.window.published(batches)

    def poll(self, now_ts: float | None = None) -> None:
        poll = getattr(self.inner, "poll", None)
        if poll is not None:
            poll(now_ts)

    def flush(self) -> None:
        flush = getattr(self.inner, "flush", None)
        if flush is not None:
            flush()


def _figures(h: Mapping[int, int]) -> dict[str, Any]:
    return {
        "p50": _ms(percentile_ms(h, 50)),
        "p99": _ms(percentile_ms(h, 99)),
        "count": sum(h.values()),
    }


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
