"""Region workers heartbeat: ``HSET heartbeats region → ts`` every second while they run.

A worker bootstep (in the main worker process, beside the consumer) starts a
daemon thread. Placement asks "can this region process these readings", so a
worker heartbeats per role, for what it drains: a worker consuming every data
queue of a region (``{region}.{kind}``, the data role) beats for the region; one
consuming its premium queues only (the premium lane) beats as the region's lane,
which placement counts for premium readings alone. Maintenance workers do not
beat. Regions and roles come from the queues the worker consumes, with no other
setting, for the launch profiles that fill a role: a worker taking only some of a
region's data queues (other than the lane's pair) fills neither and beats for
nothing, so placement does not count it; it says so in a warning when it starts.

A beat proves more than a live thread: before each one the worker checks
that its pool takes work (``PoolLiveness``): no task running past its hard
time limit (Celery kills it there, so one still running means the pool can no
longer report back), no task held by a pool process that is stopped or gone
for ``process_grace_s``, and no task received but left unstarted for
``start_timeout_s`` while nothing else finished. A wedged worker stops
beating, so placement routes its region's readings around it (within
residency), then kills its pool processes and exits with ``WEDGED_EXIT_CODE``
for its supervisor (compose ``restart``, ``iotsched supervise``) to start it
again; its unacked batch is delivered again after the visibility timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from celery import Celery, bootsteps

from scheduler import defaults
from scheduler.model import DATA_QUEUE_KINDS, SCREEN_PREMIUM_KIND, WorkClass
from stores.health_store import LANE_ROLE
from stores.protocols import RegionHeartbeatStore
from workers.fork_guard import no_fork_meanwhile

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = defaults.HEARTBEAT_INTERVAL_S
HARD_LIMIT_GRACE_S = defaults.HARD_LIMIT_GRACE_S
START_TIMEOUT_S = defaults.START_TIMEOUT_S
PROCESS_GRACE_S = defaults.PROCESS_GRACE_S
#: Exit status of a worker that found its pool wedged (EX_SOFTWARE).
WEDGED_EXIT_CODE = 70


class PoolLiveness:
    """Is the pool taking work? Fed the worker's requests (``celery.worker.state``)."""

    def __init__(
        self,
        requests: Callable[[], Iterable[Any]],
        hard_limit_grace_s: float = HARD_LIMIT_GRACE_S,
        start_timeout_s: float = START_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
        process_state: Callable[[int], str | None] | None = None,
        process_grace_s: float = PROCESS_GRACE_S,
        pool_pids: Callable[[], Iterable[int]] = lambda: (),
    ) -> None:
        """``process_state(pid)`` is a process's state letter (``ps``), None if it is gone;
        ``pool_pids()`` the pool's processes, each of which must not stay stopped."""
        self.pool_pids = pool_pids
        self.requests = requests
        self.process_state = process_state or proc_state
        self.process_grace_s = process_grace_s
        self._stuck_since: dict[str, float] = {}
        self.hard_limit_grace_s = hard_limit_grace_s
        self.start_timeout_s = start_timeout_s
        self.clock = clock
        self._first_seen: dict[str, float] = {}
        self._last_progress = clock()

    def problem(self) -> str | None:
        """Why the pool is wedged, or None when it is working or idle."""
        now = self.clock()
        current = list(self.requests())
        ids = {r.id for r in current}
        if any(rid not in ids for rid in self._first_seen):
            self._last_progress = now  # a request finished
        self._first_seen = {r.id: self._first_seen.get(r.id, now) for r in current}
        for pid in self.pool_pids():
            problem = self._process_problem("pool", pid, now)
            if problem is not None:
                return problem
        for r in current:
            started = getattr(r, "time_start", None)
            if started:
                holder = getattr(r, "worker_pid", None)
                problem = self._process_problem(f"task {r.id}", holder, now) if holder else None
                if problem is not None:
                    return problem
                hard = _hard_limit_s(r)
                if hard and now - started > hard + self.hard_limit_grace_s:
                    return f"task {r.id} running {now - started:.0f} s, past its {hard:.0f} s limit"
            elif (
                now - self._first_seen[r.id] > self.start_timeout_s
                and now - self._last_progress > self.start_timeout_s
            ):
                return f"task {r.id} not started for {now - self._first_seen[r.id]:.0f} s"
        return None

    def _process_problem(self, what: str, pid: int, now: float) -> str | None:
        state = self.process_state(pid)
        key = f"{what}:{pid}"
        if state is not None and state not in ("T", "t", "Z", "X"):
            self._stuck_since.pop(key, None)
            return None
        since = self._stuck_since.setdefault(key, now)
        if now - since > self.process_grace_s:
            return (
                f"{what}: pool process {pid} is {'gone' if state is None else 'in state ' + state}"
            )
        return None


def proc_state(pid: int) -> str | None:
    """Linux process state letter from /proc (R, S, D, T, Z…); None when the process is gone,
    "?" where /proc cannot tell (another OS): then only the time limits judge."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else "?"
    except (OSError, IndexError):
        return "?"


def _hard_limit_s(request: Any) -> float | None:
    limits = getattr(request, "time_limits", None) or (None, None)
    task = getattr(request, "task", None)
    return limits[0] or getattr(task, "time_limit", None)


_DATA_KINDS = frozenset(DATA_QUEUE_KINDS)
_LANE_KINDS = frozenset((WorkClass.PREMIUM.value, SCREEN_PREMIUM_KIND))


def _kinds_by_region(queue_names: Iterable[str]) -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {}
    for q in queue_names:
        region, _, kind = q.rpartition(".")
        if region and kind in _DATA_KINDS:
            kinds.setdefault(region, set()).add(kind)
    return kinds


def regions_served(queue_names: Iterable[str]) -> list[str]:
    """Regions all of whose data queues (anomaly, screen_premium, premium, screen,
    standard) are among ``queue_names``: the worker drains the region's data."""
    return sorted(r for r, k in _kinds_by_region(queue_names).items() if k >= _DATA_KINDS)


def lanes_served(queue_names: Iterable[str]) -> list[str]:
    """Regions whose premium queues (premium, screen_premium) are among ``queue_names``
    but not all of their data queues: the worker is the region's premium lane."""
    kinds = _kinds_by_region(queue_names)
    return sorted(r for r, k in kinds.items() if k >= _LANE_KINDS and not k >= _DATA_KINDS)


def regions_unbeaten(queue_names: Iterable[str]) -> list[str]:
    """Regions some of whose data queues are among ``queue_names`` though the worker beats
    for neither role there (``regions_served``, ``lanes_served``): it drains them unseen."""
    kinds = _kinds_by_region(queue_names)
    return sorted(r for r, k in kinds.items() if not k >= _LANE_KINDS)


class Heartbeater:
    """Writes this process's regions' heartbeat (``regions``: data role; ``lanes``:
    premium lane) on a timer thread until stopped."""

    def __init__(
        self,
        health: RegionHeartbeatStore,
        regions: Iterable[str],
        interval_s: float = HEARTBEAT_INTERVAL_S,
        clock: Callable[[], float] = time.time,
        liveness: PoolLiveness | None = None,
        on_wedged: Callable[[str], None] | None = None,
        lanes: Iterable[str] = (),
    ) -> None:
        """Without ``liveness`` every beat is written (a process that is not a worker)."""
        self.health = health
        self.liveness = liveness
        self.on_wedged = on_wedged
        self.wedged: str | None = None
        self.regions = tuple(regions)
        self.lanes = tuple(lanes)
        self.interval_s = interval_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat_once(self) -> None:
        if self.liveness is not None:
            problem = self.liveness.problem()
            if problem is not None:
                self.wedged = problem
                log.error(
                    "worker pool wedged (%s): no more heartbeats for %s",
                    problem,
                    self.regions + self.lanes,
                )
                if self.on_wedged is not None:
                    self.on_wedged(problem)
                return
        now_ts = self.clock()
        self.health.beat(self.regions, now_ts)
        if self.lanes:
            self.health.beat(self.lanes, now_ts, role=LANE_ROLE)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with no_fork_meanwhile():  # over TLS a fork mid-call can hang the child
                    self.beat_once()
            except redis.RedisError as exc:
                # Missing beats are the signal: the region looks partitioned, as it is.
                log.warning("heartbeat for %s failed: %s", self.regions + self.lanes, exc)
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if self._thread is None and (self.regions or self.lanes):
            self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval_s)
            self._thread = None


class RegionHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker bootstep: heartbeat the regions whose data queues this worker consumes."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.heartbeater: Heartbeater | None = None

    def start(self, parent: Any) -> None:
        queues = list(parent.app.amqp.queues.consume_from or {})
        regions, lanes = regions_served(queues), lanes_served(queues)
        unbeaten = regions_unbeaten(queues)
        if unbeaten:
            log.warning(
                "this worker takes some data queues of %s but not all (nor the premium "
                "lane's pair): it beats for no role there, and placement does not count it",
                ", ".join(unbeaten),
            )
        if not regions and not lanes:
            return
        from celery.worker import state

        liveness = PoolLiveness(
            lambda: [*state.active_requests, *state.reserved_requests],
            pool_pids=lambda: _pool_pids(parent),
        )
        self.heartbeater = Heartbeater(
            parent.app.runtime.stores.health,
            regions,
            liveness=liveness,
            on_wedged=lambda _problem: exit_wedged(parent),
            lanes=lanes,
        )
        self.heartbeater.start()

    def stop(self, parent: Any) -> None:
        if self.heartbeater is not None:
            self.heartbeater.stop()
            self.heartbeater = None

    shutdown = stop


def _pool_pids(worker: Any) -> list[int]:
    """The prefork pool's processes (none for solo and threads pools)."""
    pool = getattr(getattr(worker, "pool", None), "_pool", None)
    return [p.pid for p in getattr(pool, "_pool", None) or [] if getattr(p, "pid", None)]


def exit_wedged(worker: Any) -> None:
    """Kill the pool processes and leave; a warm shutdown would wait on the wedged pool."""
    for pid in _pool_pids(worker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    logging.shutdown()
    os._exit(WEDGED_EXIT_CODE)


def install_heartbeat(app: Celery) -> None:
    """Add the heartbeat bootstep to ``app``'s workers."""
    app.steps["worker"].add(RegionHeartbeat)
