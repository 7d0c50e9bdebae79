"""Maintenance runtime: a beat-driven tick that starts windows, and the task that runs operations.

``iotsched.maintenance.tick`` (every second, on the control queue) walks the
reservation book: it sends each operation to ``{region}.maintenance`` for its
window's start, with an ETA when the start falls before the next tick, so a
window starts on time rather than up to a tick late; it settles runs that gave
up (rebook into the next feasible window plus an alert); and it publishes each
region's pre-drain level for the autoscaler.

``iotsched.maintenance.run`` executes one try on a dedicated maintenance
worker and records the outcome in the run (``scheduler.maintenance``), which
decides retry with backoff, cutoff and rebooking. Redelivery is harmless: a
try that already started is not started again.
"""

from __future__ import annotations

import functools
import time

from runtime.runtime import Runtime

# Re-exported: the maintenance planning these tasks apply (tests name it here).
from scheduler.maintenance_plan import BookState as BookState
from scheduler.maintenance_plan import Dispatch as Dispatch
from scheduler.maintenance_plan import OpOutcome, retry_policy
from scheduler.maintenance_plan import begin as begin
from scheduler.maintenance_plan import finish as finish
from scheduler.maintenance_plan import plan_tick as plan_tick
from scheduler.maintenance_plan import settle as settle
from scheduler.wire import MAINTENANCE_RUN_TASK, MAINTENANCE_TICK_TASK
from stores.maintenance_ops import operation
from tasks.app import app
from tasks.base import WorkTask
from tasks.limits import work_options


def handle_tick(rt: Runtime, _payload: object = None) -> int:
    """Start due windows, settle failed runs, publish drain levels; returns tries sent."""
    now = rt.clock()
    policy = retry_policy(rt.settings)
    lead_s = rt.settings.maintenance_predrain_lead_s
    sends = rt.stores.reservations.update(lambda s: plan_tick(s, now, policy, lead_s=lead_s))
    for d in sends:
        rt.publisher.send_maintenance_run(d.region, d.reservation_id, d.try_no, d.due_ts)
    return len(sends)


def handle_run(rt: Runtime, attempt: tuple[str, int]) -> str:
    """Run one try of a reservation's operation until done or its window's cutoff."""
    reservation_id, try_no = attempt
    store = rt.stores.reservations
    while True:
        now = rt.clock()
        started = store.update(
            functools.partial(begin, reservation_id=reservation_id, try_no=try_no, now_ts=now)
        )
        if not isinstance(started, float):
            break
        time.sleep(min(started, 1.0))  # an ETA that fired a hair early
    if started is None:
        return "skipped"
    name = started.reservation.operation
    operation(name)  # an unknown operation fails the task, as it always has
    outcome: OpOutcome | None = None
    error = ""
    try:
        outcome = rt.stores.maintenance.run(name, started.cursor, started.cutoff_ts)
    except Exception as exc:  # any failure of the operation is a failed try, retried or rebooked
        error = f"{type(exc).__name__}: {exc}"
    store.update(lambda s: finish(s, reservation_id, try_no, rt.clock(), outcome, error))
    return "failed" if outcome is None else ("done" if outcome.done else "cut_off")


@app.task(base=WorkTask, bind=True, ignore_result=True, **work_options(MAINTENANCE_TICK_TASK))
def maintenance_tick(self: WorkTask) -> int:
    """Start due windows, settle failed runs, publish drain levels; returns tries sent."""
    return int(self.work(handle_tick, None))


@app.task(base=WorkTask, bind=True, ignore_result=True, **work_options(MAINTENANCE_RUN_TASK))
def run_operation(self: WorkTask, reservation_id: str, try_no: int) -> str:
    """Run one try of a reservation's operation until done or its window's cutoff."""
    return str(self.work(handle_run, (reservation_id, try_no)))
