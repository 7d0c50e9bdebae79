"""Given a worker's requests over time, the heartbeat proves its pool takes work, or stops."""

from __future__ import annotations

from dataclasses import dataclass

import fakeredis

from stores.health_store import HealthStore
from stores.keys import Keys
from workers.heartbeat import Heartbeater, PoolLiveness


@dataclass
class Req:
    id: str
    time_start: float | None = None
    time_limits: tuple[float | None, float | None] = (60.0, 30.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_pool_and_a_task_within_its_limit_are_live() -> None:
    clock = Clock()
    running: list[Req] = []
    live = PoolLiveness(lambda: running, clock=clock)
    assert live.problem() is None
    running.append(Req("a", time_start=clock.now))
    clock.now += 65.0  # past the hard limit, within the grace Celery needs to kill it
    assert live.problem() is None


def test_a_task_running_past_its_hard_limit_means_the_pool_is_wedged() -> None:
    clock = Clock()
    running = [Req("a", time_start=clock.now)]
    live = PoolLiveness(lambda: running, hard_limit_grace_s=10.0, clock=clock)
    clock.now += 71.0
    problem = live.problem()
    assert problem is not None and "past its 60 s limit" in problem


def test_a_task_left_unstarted_while_nothing_finishes_means_the_pool_is_wedged() -> None:
    clock = Clock()
    waiting = [Req("a")]
    live = PoolLiveness(lambda: waiting, start_timeout_s=30.0, clock=clock)
    assert live.problem() is None
    clock.now += 20.0
    assert live.problem() is None
    clock.now += 11.0
    assert live.problem() is not None


def test_a_task_waiting_behind_others_that_finish_is_not_a_wedge() -> None:
    clock = Clock()
    current = [Req("busy", time_start=clock.now), Req("next")]
    live = PoolLiveness(lambda: current, start_timeout_s=30.0, clock=clock)
    live.problem()
    clock.now += 25.0
    current[:] = [Req("busy2", time_start=clock.now), Req("next")]  # "busy" finished
    live.problem()
    clock.now += 25.0
    assert live.problem() is None


def test_a_wedged_worker_stops_beating_and_hands_over_to_its_supervisor() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("t-live")
    clock = Clock()
    running = [Req("a", time_start=clock.now)]
    told: list[str] = []
    beats = Heartbeater(
        HealthStore(client, keys, ["eu-west"]),
        ["eu-west"],
        clock=clock,
        liveness=PoolLiveness(lambda: running, clock=clock),
        on_wedged=told.append,
    )
    beats.beat_once()
    assert client.hget(keys.heartbeats, "eu-west") == repr(clock.now).encode()
    clock.now += 100.0
    beats.beat_once()
    assert client.hget(keys.heartbeats, "eu-west") == repr(1_000.0).encode()
    assert len(told) == 1 and beats.wedged == told[0]


def test_a_task_whose_pool_process_is_stopped_is_wedged_after_a_grace() -> None:
    clock = Clock()
    running = [Req("a", time_start=clock.now)]
    running[0].worker_pid = 4242  # type: ignore[attr-defined]
    states = {4242: "T"}
    live = PoolLiveness(lambda: running, clock=clock, process_state=states.get, process_grace_s=5.0)
    assert live.problem() is None
    clock.now += 6.0
    problem = live.problem()
    assert problem is not None and "state T" in problem
    states[4242] = "S"  # continued
    assert live.problem() is None


def test_an_idle_pool_process_left_stopped_is_wedged_too() -> None:
    clock = Clock()
    states = {7: "S", 8: "T"}
    live = PoolLiveness(lambda: [], clock=clock, process_state=states.get, pool_pids=lambda: [7, 8])
    assert live.problem() is None
    clock.now += 6.0
    assert "pool process 8 is in state T" in (live.problem() or "")
