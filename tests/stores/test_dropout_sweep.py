"""The dropout sweep alerts a device silent past its usual interval once, while it is silent."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import fakeredis
import numpy as np
import pytest

from scheduler.anomaly_kind import DROPOUT
from scheduler.detection import screen
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import fresh_states
from scheduler.model import Batch
from scheduler.registry import Registry, generate_registry
from stores.detector_store import RedisDetectorStore
from stores.dropout_store import RedisDropoutStore, StatePage
from stores.keys import Keys
from stores.redis_state import RedisStateStore
from tasks.dropout import SweepResult, sweep
from tasks.screen import screen_batch

NOW = 1_700_000_000.0
INTERVAL_S = 10.0
KEYS = Keys("t")


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def registry() -> Registry:
    return generate_registry(300, seed=1)


def warm_up(client: fakeredis.FakeRedis, device_ids: np.ndarray, last_ts: np.ndarray) -> None:
    """Store states of devices that reported every 10 s, the last time at ``last_ts``."""
    readings = 20
    rows = np.repeat(np.arange(device_ids.size), readings)
    ts = (last_ts[:, None] - INTERVAL_S * np.arange(readings)[::-1]).ravel()
    values = 20.0 + np.random.default_rng(0).normal(0.0, 0.5, ts.size)
    result = screen(fresh_states(device_ids.size), rows, ts, values, DetectorConfig())
    store = RedisDetectorStore(client, KEYS)
    warm = store.load("warm-up", device_ids.astype(np.uint64), 1)
    store.commit(warm, result.states, {}, ts.size, 0)


def home_devices(registry: Registry, region: str) -> np.ndarray:
    code = registry.topology.region_code(region)
    ids: np.ndarray = registry.device_id[registry.home_region == code]
    return ids


def test_a_silent_device_is_alerted_once_by_two_sweeps(
    client: fakeredis.FakeRedis, registry: Registry
) -> None:
    region = registry.topology.regions[0]
    mine = home_devices(registry, region)[:3]
    other = home_devices(registry, registry.topology.regions[1])[:1]
    # Given devices that report every 10 s: mine[0] and one of another region went
    # silent 100 s ago; mine[1] and mine[2] reported 5 s ago
    ids = np.concatenate([mine, other])
    warm_up(client, ids, np.array([NOW - 100, NOW - 5, NOW - 5, NOW - 100]))
    emitted: list[dict[str, Any]] = []
    store = RedisDropoutStore(client, KEYS)
    # When the region is swept twice
    first = sweep(store, registry, region, emitted.append, NOW)
    second = sweep(store, registry, region, emitted.append, NOW + 30)
    # Then only its own silent device is alerted, once, as a dropout last heard 100 s ago
    assert (first.alerts, second.alerts) == (1, 0)
    assert len(emitted) == 1
    alerts = emitted[0]
    assert alerts["region"] == region and alerts["n"] == 1
    assert np.frombuffer(alerts["device_id"], "<u8").tolist() == [int(mine[0])]
    assert np.frombuffer(alerts["kind"], "i1").tolist() == [DROPOUT]
    assert np.frombuffer(alerts["ts"], "<f8")[0] == pytest.approx(NOW - 100, rel=0, abs=1e-6)


def test_a_device_returning_after_the_sweep_is_not_alerted_again(
    client: fakeredis.FakeRedis, registry: Registry
) -> None:
    region = registry.topology.regions[0]
    device = home_devices(registry, region)[:1]
    warm_up(client, device, np.array([NOW - 100]))
    emitted: list[dict[str, Any]] = []
    # Given a sweep that reported the silence
    assert sweep(RedisDropoutStore(client, KEYS), registry, region, emitted.append, NOW).alerts
    # When the device reports again and its batch is screened
    batch = Batch(
        "back", region, "standard", ("value",), device.astype(np.uint64),
        np.array([NOW]), np.array([[20.0]]), np.array([NOW]),
    )  # fmt: skip
    screened: list[dict[str, Any]] = []
    screen_batch(batch, RedisDetectorStore(client, KEYS), screened.append, clock=lambda: NOW)
    # Then screening does not report that dropout a second time
    assert screened == []


def test_the_sweep_walks_every_state_in_bounded_pages_across_sweeps(
    client: fakeredis.FakeRedis, registry: Registry
) -> None:
    region = registry.topology.regions[0]
    mine = home_devices(registry, region)
    # Given every device of the region silent for 100 s
    warm_up(client, mine, np.full(mine.size, NOW - 100))
    store = RedisDropoutStore(client, KEYS)
    alerted: list[int] = []
    folded: list[int] = []

    def emit(p: dict[str, Any]) -> None:
        alerted.extend(np.frombuffer(p["device_id"], "<u8").tolist())
        folded.extend(e["devices"] for e in p.get("silences", []))

    # When sweeps of at most one small page each run until a pass finishes
    sweeps = 0
    while True:
        sweeps += 1
        result = sweep(store, registry, region, emit, NOW, page_size=10, max_pages=1)
        if result.passes_finished or sweeps > 1_000:
            break
    # Then the pass took several sweeps (the cursor carried over) and reported each device
    # once: alone or counted in a silence event
    assert sweeps > 3
    assert len(set(alerted)) == len(alerted)
    assert set(alerted) <= set(mine.tolist())
    assert len(alerted) + sum(folded) == mine.size


def test_a_sweep_past_its_time_budget_stops_after_the_page_in_hand_and_the_next_carries_on(
    client: fakeredis.FakeRedis, registry: Registry
) -> None:
    region = registry.topology.regions[0]
    mine = home_devices(registry, region)
    warm_up(client, mine, np.full(mine.size, NOW - 100))
    store = RedisDropoutStore(client, KEYS)
    checks: list[float] = []
    # Given a sweep clock that says each page took a second, twice the budget

    def elapsed_s() -> float:
        checks.append(len(checks) + 1.0)
        return checks[-1]

    # When a sweep allowed many small pages runs
    result = sweep(
        store, registry, region, lambda _: None, NOW, page_size=10, max_pages=50,
        budget_s=0.5, elapsed_s=elapsed_s,
    )  # fmt: skip
    # Then it read one page only (the budget was spent after it), not its 50
    assert checks == [1.0]
    assert 0 < result.states < mine.size and result.passes_finished == 0
    # And a sweep with time to spare carries on from where it stopped, to the pass's end
    rest = sweep(store, registry, region, lambda _: None, NOW, page_size=10, max_pages=10_000,
                 budget_s=float("inf"))  # fmt: skip
    assert rest.passes_finished == 1


def screened_up_to(client: fakeredis.FakeRedis, region: str, tier: str, ts: float) -> None:
    """Record that ``region``'s ``tier`` stream has screened readings up to ``ts``."""
    store = RedisDetectorStore(client, KEYS)
    ids = np.array([999_999_999], dtype=np.uint64)
    loaded = store.load(f"frontier-{tier}-{ts}", ids, 1)
    assert loaded.states is not None
    store.commit(loaded, loaded.states, {}, 0, 0, b"", (region, tier, ts))


def test_devices_whose_readings_wait_in_a_backlog_are_not_silent(
    client: fakeredis.FakeRedis, registry: Registry
) -> None:
    region = registry.topology.regions[0]
    code = registry.topology.region_code(region)
    standard = registry.device_id[(registry.home_region == code) & (registry.tier == 1)][:3]
    # Given standard devices last screened 100 s before the wall clock, while their
    # tier's screening is itself 100 s behind (readings queued, not devices silent) and
    # premium's is not (the region's ingest goes on)
    warm_up(client, standard, np.full(standard.size, NOW - 100))
    screened_up_to(client, region, "standard", NOW - 100)
    screened_up_to(client, region, "premium", NOW)
    emitted: list[dict[str, Any]] = []
    # When the region is swept with a lag bound longer than the backlog
    swept = sweep(
        RedisDropoutStore(client, KEYS), registry, region, emitted.append, NOW, max_lag_s=300.0
    )
    # Then no device is alerted as silent
    assert swept.alerts == 0 and emitted == []


def test_a_device_silent_while_its_tier_keeps_flowing_is_alerted(
    client: fakeredis.FakeRedis, registry: Registry
) -> None:
    region = registry.topology.regions[0]
    code = registry.topology.region_code(region)
    standard = registry.device_id[(registry.home_region == code) & (registry.tier == 1)][:2]
    # Given a backlog of 100 s, one device heard up to it and one silent 100 s before that
    warm_up(client, standard, np.array([NOW - 100, NOW - 200]))
    screened_up_to(client, region, "standard", NOW - 100)
    screened_up_to(client, region, "premium", NOW)
    emitted: list[dict[str, Any]] = []
    swept = sweep(
        RedisDropoutStore(client, KEYS), registry, region, emitted.append, NOW, max_lag_s=300.0
    )
    # Then only the silent one is alerted, last heard when it really was
    assert swept.alerts == 1
    assert np.frombuffer(emitted[0]["device_id"], "<u8").tolist() == [int(standard[1])]
    assert np.frombuffer(emitted[0]["ts"], "<f8")[0] == pytest.approx(NOW - 200, rel=0, abs=1e-6)


def reported(emitted: list[dict[str, Any]]) -> tuple[list[int], list[tuple[str, int]]]:
    """(devices alerted alone, (group, devices) of each folded silence) over payloads."""
    alone = [d for p in emitted for d in np.frombuffer(p["device_id"], "<u8").tolist()]
    events = [(e["group"], e["devices"]) for p in emitted for e in p.get("silences", [])]
    return alone, events


def test_a_region_whose_ingest_stopped_is_one_event_and_its_return_raises_no_alert(
    client: fakeredis.FakeRedis,
) -> None:
    registry = generate_registry(3_000, seed=1, group_size=100)
    region = registry.topology.regions[0]
    mine = home_devices(registry, region)
    # Given every device of the region last heard 60 s ago, and nothing screened from the
    # region since (an outage: every stream stopped, not one tier's backlog)
    warm_up(client, mine, np.full(mine.size, NOW - 60))
    screened_up_to(client, region, "premium", NOW - 60)
    screened_up_to(client, region, "standard", NOW - 60)
    emitted: list[dict[str, Any]] = []
    # When the region is swept during the outage
    swept = sweep(RedisDropoutStore(client, KEYS), registry, region, emitted.append, NOW)
    # Then one region-wide silence event counts every device, and none is alerted alone
    assert reported(emitted) == ([], [("*", mine.size)])
    assert (swept.alerts, swept.silence_events, swept.folded) == (0, 1, mine.size)
    # When the devices come back and their readings are screened
    back = Batch(
        "back", region, "standard", ("value",), mine.astype(np.uint64),
        np.full(mine.size, NOW + 5), np.full((mine.size, 1), 20.0), np.full(mine.size, NOW + 5),
    )  # fmt: skip
    screened: list[dict[str, Any]] = []
    screen_batch(back, RedisDetectorStore(client, KEYS), screened.append, clock=lambda: NOW + 5)
    # Then screening raises no dropout for a silence the sweep already folded
    assert screened == []


def test_one_gateway_silent_while_the_region_reports_is_one_event_for_its_group(
    client: fakeredis.FakeRedis,
) -> None:
    registry = generate_registry(3_000, seed=1, group_size=100)
    region = registry.topology.regions[0]
    mine = home_devices(registry, region)
    groups = registry.group[registry.lookup(mine)]
    down, lone_group = int(groups[0]), int(groups[groups != groups[0]][0])
    lone = mine[groups == lone_group][:1]
    # Given the region reporting (screened up to now), except one group's devices, silent
    # for 100 s (its gateway is down), and one device of another group, silent as long
    last = np.where(groups == down, NOW - 100, NOW - 5)
    last[mine == lone[0]] = NOW - 100
    warm_up(client, mine, last)
    screened_up_to(client, region, "premium", NOW)
    screened_up_to(client, region, "standard", NOW)
    emitted: list[dict[str, Any]] = []
    # When the region is swept
    sweep(RedisDropoutStore(client, KEYS), registry, region, emitted.append, NOW)
    # Then the gateway's group is one event with its device count, and the lone device
    # among reporting peers is alerted on its own
    assert reported(emitted) == ([int(lone[0])], [(str(down), int((groups == down).sum()))])


def back_at(
    client: fakeredis.FakeRedis, region: str, ids: np.ndarray, ts: float, name: str
) -> None:
    """``ids`` report at ``ts``, screened (the region's standard stream reaches ``ts``)."""
    batch = Batch(
        name, region, "standard", ("value",), ids.astype(np.uint64), np.full(ids.size, ts),
        np.full((ids.size, 1), 20.0), np.full(ids.size, ts),
    )  # fmt: skip
    screen_batch(batch, RedisDetectorStore(client, KEYS), lambda _: None, clock=lambda: ts)
    screened_up_to(client, region, "premium", ts)


class QuietRegion(NamedTuple):
    registry: Registry
    region: str
    mine: np.ndarray
    store: RedisDropoutStore


@pytest.fixture
def quiet_region(client: fakeredis.FakeRedis) -> QuietRegion:
    """A region's 1,000 warm devices (reporting every 10 s: a 50 s dropout limit), silent
    since ``NOW - 60``, and its premium stream screened up to then: an outage."""
    registry = generate_registry(3_000, seed=1, group_size=100)
    region = registry.topology.regions[0]
    mine = home_devices(registry, region)
    warm_up(client, mine, np.full(mine.size, NOW - 60))
    screened_up_to(client, region, "premium", NOW - 60)
    return QuietRegion(registry, region, mine, RedisDropoutStore(client, KEYS))


def test_a_device_that_stays_silent_after_its_folded_outage_is_then_alerted_alone(
    client: fakeredis.FakeRedis, quiet_region: QuietRegion
) -> None:
    registry, region, mine, store = quiet_region
    dead, peers = mine[:1], mine[1:]
    # Given a region outage the sweep folded into one event
    outage: list[dict[str, Any]] = []
    sweep(store, registry, region, outage.append, NOW)
    assert reported(outage) == ([], [("*", mine.size)])
    # When every device but one comes back, and the region is swept just after
    back_at(client, region, peers, NOW + 5, "back")
    soon: list[dict[str, Any]] = []
    sweep(store, registry, region, soon.append, NOW + 6)
    # Then nobody is alerted yet: a peer late by less than its own limit is no dropout
    assert reported(soon) == ([], [])
    # When its peers keep reporting past the silent device's dropout limit
    back_at(client, region, peers, NOW + 60, "still")
    later: list[dict[str, Any]] = []
    result = sweep(store, registry, region, later.append, NOW + 61)
    # Then the device silent among reporting peers is alerted on its own, once
    assert reported(later) == ([int(dead[0])], [])
    assert result.alerts_after_outage == 1
    again: list[dict[str, Any]] = []
    back_at(client, region, peers, NOW + 115, "and-still")
    sweep(store, registry, region, again.append, NOW + 120)
    assert reported(again) == ([], [])


def test_devices_back_from_a_folded_outage_are_never_alerted_alone(
    client: fakeredis.FakeRedis, quiet_region: QuietRegion
) -> None:
    registry, region, mine, store = quiet_region
    # Given a folded region outage, after which every device came back
    sweep(store, registry, region, lambda _: None, NOW)
    back_at(client, region, mine, NOW + 5, "back")
    # When the region is swept again and again while they report
    emitted: list[dict[str, Any]] = []
    for k, at in enumerate((NOW + 10, NOW + 40, NOW + 75)):
        back_at(client, region, mine, at - 1, f"report-{k}")
        sweep(store, registry, region, emitted.append, at)
    # Then none of them is alerted, and none is remembered as folded any more
    assert reported(emitted) == ([], [])
    assert client.zcard(KEYS.dropout_folded(region)) == 0


def test_the_last_devices_of_an_outage_found_after_their_peers_returned_join_its_event(
    client: fakeredis.FakeRedis, quiet_region: QuietRegion
) -> None:
    registry, region, mine, store = quiet_region
    # Given a region outage of which a short sweep saw only part before the devices came back
    first: list[dict[str, Any]] = []
    sweep(store, registry, region, first.append, NOW, page_size=300, max_pages=1)
    alone, events = reported(first)
    assert alone == [] and len(events) == 1 and 0 < events[0][1] < mine.size
    # When most devices are back, a few of several groups still on their way (none of
    # them seen silent yet)
    folded = KEYS.dropout_folded(region)
    unseen = [int(d) for d in mine if client.zscore(folded, int(d)) is None]
    late = np.array(unseen[::40][:20], dtype=np.uint64)
    assert late.size >= 10
    back_at(client, region, np.setdiff1d(mine, late), NOW + 5, "back")
    after: list[dict[str, Any]] = []
    sweep(store, registry, region, after.append, NOW + 6)
    # Then the ones still away are not alerted one by one among their returned peers:
    # they went silent with the outage and join its event
    alone, events = reported(after)
    assert set(alone).isdisjoint(late.tolist()), alone
    assert sum(n for _, n in events) >= 1


def remembered(client: fakeredis.FakeRedis, region: str) -> set[int]:
    """Devices the region remembers as folded into a silence event, armed or not."""
    keys = (KEYS.dropout_folded(region), KEYS.dropout_armed(region))
    return {int(d) for k in keys for d in client.zrange(k, 0, -1)}


def sweep_a_pass(store: RedisDropoutStore, registry: Registry, region: str, now_ts: float) -> None:
    for _ in range(1_000):
        result = sweep(store, registry, region, lambda _: None, now_ts, budget_s=float("inf"))
        if result.passes_finished:
            return
    raise AssertionError("the sweep never finished a pass")


def test_devices_that_leave_the_region_after_a_folded_outage_are_forgotten_in_two_passes(
    client: fakeredis.FakeRedis, quiet_region: QuietRegion
) -> None:
    registry, region, mine, store = quiet_region
    # Given a region outage the sweep folded into one event: every device remembered
    sweep_a_pass(store, registry, region, NOW)
    assert remembered(client, region) == set(mine.tolist())
    # When, still silent, a third leave the fleet (their states deleted) and a third move
    # to another region (the registry says so), and the sweep runs two more passes
    gone, moved, stay = mine[0::3], mine[1::3], mine[2::3]
    client.delete(*[KEYS.detector_state(int(d)) for d in gone])
    home = registry.home_region.copy()
    home[registry.lookup(moved)] = registry.topology.region_code(registry.topology.regions[1])
    rehomed = dataclasses.replace(registry, home_region=home)
    sweep_a_pass(store, rehomed, region, NOW + 10)
    sweep_a_pass(store, rehomed, region, NOW + 20)
    # Then the region remembers only its devices still silent in it: memory follows the
    # fleet, not every device ever folded
    assert remembered(client, region) == set(stay.tolist())


def test_a_sweep_started_while_another_runs_reads_nothing_and_forgets_no_device(
    client: fakeredis.FakeRedis, quiet_region: QuietRegion
) -> None:
    registry, region, mine, store = quiet_region
    # Given a folded region outage whose devices every pass so far has found
    sweep_a_pass(store, registry, region, NOW)
    sweep_a_pass(store, registry, region, NOW + 1)
    before = remembered(client, region)
    assert before == set(mine.tolist())
    beside: list[SweepResult] = []

    class SweepStartedMidPage(RedisDropoutStore):
        """Another worker takes the next sweep of the region while this one holds a page."""

        def page(self, region: str, page_size: int) -> StatePage:
            held = super().page(region, page_size)
            if not beside:
                other = RedisDropoutStore(client, KEYS)
                unbounded = float("inf")
                run = sweep(other, registry, region, lambda _: None, NOW + 2, budget_s=unbounded)
                beside.append(run)
            return held

    # When a sweep of one page runs with a full sweep started beside it
    sweep(SweepStartedMidPage(client, KEYS), registry, region, lambda _: None, NOW + 2,
          page_size=200, max_pages=1)  # fmt: skip
    # Then the sweep beside it did nothing (no page read, no pass ended) ...
    assert beside == [SweepResult(skipped_busy=1)]
    # ... and every device still present is still remembered, through two more passes
    assert remembered(client, region) == before
    sweep_a_pass(store, registry, region, NOW + 3)
    sweep_a_pass(store, registry, region, NOW + 4)
    assert remembered(client, region) == before


def test_a_sweep_that_fails_leaves_the_region_to_the_next_sweep(
    client: fakeredis.FakeRedis, quiet_region: QuietRegion
) -> None:
    registry, region, _, store = quiet_region

    def broken(_: dict[str, Any]) -> None:
        raise ConnectionError("broker gone")

    # Given a sweep that failed publishing its alerts
    with pytest.raises(ConnectionError):
        sweep(store, registry, region, broken, NOW)
    # When the region is swept again
    emitted: list[dict[str, Any]] = []
    result = sweep(store, registry, region, emitted.append, NOW + 1, budget_s=float("inf"))
    # Then that sweep runs: it reads states (the first one's are marked, so none is new)
    assert result.states > 0


def test_devices_remembered_before_passes_were_numbered_are_forgotten_once_gone(
    client: fakeredis.FakeRedis,
) -> None:
    store = RedisDropoutStore(client, KEYS)
    region = "eu"
    # Given devices remembered as folded (one also armed) by a sweep that numbered no pass
    # (an older release), their states long gone
    client.zadd(KEYS.dropout_folded(region), {"41": 100.0, "42": 100.0})
    client.zadd(KEYS.dropout_armed(region), {"42": 150.0})
    # When passes end without finding them
    ended = [store.end_pass(region, 7 + k, now_ts=200.0 + k) for k in range(4)]
    # Then they are forgotten, two passes after the first that numbered them
    assert ended == [0, 0, 2, 0]
    assert remembered(client, region) == set()


def test_a_sweep_with_an_older_registry_than_the_stored_one_marks_nothing(
    client: fakeredis.FakeRedis, registry: Registry
) -> None:
    region = registry.topology.regions[0]
    silent = home_devices(registry, region)[:1]
    # Given a device silent for 100 s, and the registry replaced since the sweeping
    # worker took its snapshot (stored version 2, the snapshot's 1)
    warm_up(client, silent, np.array([NOW - 100]))
    state = RedisStateStore(client, KEYS)
    state.save_registry(registry)
    stored = state.save_registry(registry)
    stale = registry.with_version(stored - 1)
    store = RedisDropoutStore(client, KEYS)
    # When the region is swept with the old snapshot
    emitted: list[dict[str, Any]] = []
    first = sweep(store, stale, region, emitted.append, NOW)
    # Then nothing is marked or alerted: its streams may not be the devices' own
    assert first.alerts == 0 and emitted == []
    # And the next pass, with the registry reloaded, alerts the device once
    second = sweep(store, registry.with_version(stored), region, emitted.append, NOW + 30)
    assert second.alerts == 1
    assert np.frombuffer(emitted[0]["device_id"], "<u8").tolist() == [int(silent[0])]
