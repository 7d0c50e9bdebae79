"""Silences fold before alerting: an outage of a region or a group is one event, a device
silent among reporting peers is its own dropout."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.detection import screen
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import fresh_states
from scheduler.dropout_fold import (
    REGION_WIDE,
    FoldConfig,
    fold_silences,
    outage_over,
    quiet_devices,
    settle_folded,
)
from scheduler.dropout_sweep import find_dropouts

CFG = FoldConfig()
NOW = 1_700_000_000.0


def fleet(groups: int, per_group: int) -> np.ndarray:
    """The group of each examined device: ``groups`` groups of ``per_group`` devices."""
    return np.repeat(np.arange(groups, dtype=np.int64), per_group)


def test_a_region_gone_quiet_is_one_event_not_one_alert_per_device() -> None:
    # Given 20 groups of 30 devices, every one quiet and newly silent (an ingest outage)
    groups = fleet(20, 30)
    quiet = np.ones(groups.size, dtype=bool)
    # When the silences are folded
    folded = fold_silences(groups, quiet, groups)
    # Then one region-wide event holds all 600 and no device is alerted on its own
    assert folded.individual.size == 0
    (event,) = folded.events
    assert event.group == REGION_WIDE and event.members.size == 600


def test_a_group_gone_quiet_while_the_others_report_is_one_event_for_that_group() -> None:
    # Given 20 groups of 30 devices; group 7's gateway is down (all its devices quiet)
    groups = fleet(20, 30)
    quiet = groups == 7
    silent = np.flatnonzero(quiet)
    # When its devices are found silent
    folded = fold_silences(groups, quiet, groups[silent])
    # Then they are one event of group 7, none alerted alone
    assert folded.individual.size == 0
    (event,) = folded.events
    assert (event.group, event.members.size) == (7, 30)


def test_a_device_silent_among_reporting_peers_is_alerted_on_its_own() -> None:
    # Given group 3 reporting, except one device (a true dropout), and one device
    # of a group that is mostly quiet
    groups = fleet(20, 30)
    quiet = groups == 5
    lone = 3 * 30 + 4
    quiet[lone] = True
    silent = np.array([lone, 5 * 30], dtype=np.intp)
    # When both are found silent in the same sweep
    folded = fold_silences(groups, quiet, groups[silent])
    # Then the lone device is alerted on its own and the other folds into group 5's event
    assert folded.individual.tolist() == [0]
    assert [(e.group, e.members.tolist()) for e in folded.events] == [(5, [1])]


def test_a_few_silent_devices_of_a_small_group_are_each_alerted() -> None:
    # Given a group of 4 devices examined, 3 of them quiet (below the fewest that fold)
    groups = np.array([0, 0, 0, 0, *([1] * 100)], dtype=np.int64)
    quiet = np.zeros(groups.size, dtype=bool)
    quiet[:3] = True
    # When the 3 are folded
    folded = fold_silences(groups, quiet, groups[:3])
    # Then each is its own dropout: a handful is no outage
    assert folded.individual.tolist() == [0, 1, 2] and folded.events == ()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.booleans(), st.booleans()), min_size=1, max_size=300)
)
def test_every_new_silence_is_reported_exactly_once_alone_or_in_one_event(
    rows: list[tuple[int, bool, bool]],
) -> None:
    # Given any examined devices (group, quiet) some of the quiet ones newly silent
    groups = np.array([g for g, _, _ in rows], dtype=np.int64)
    quiet = np.array([q for _, q, _ in rows], dtype=bool)
    new = np.flatnonzero(quiet & np.array([n for _, _, n in rows], dtype=bool))
    # When they are folded
    folded = fold_silences(groups, quiet, groups[new], CFG)
    # Then the individual alerts and the events' members partition them
    reported = np.concatenate([folded.individual, *(e.members for e in folded.events)])
    assert sorted(reported.tolist()) == list(range(new.size))
    # And an event only ever holds devices of its own group (or the whole region)
    for event in folded.events:
        if event.group != REGION_WIDE:
            assert set(groups[new][event.members].tolist()) == {event.group}


def warm_states(last_ts: np.ndarray, interval_s: float = 10.0) -> np.ndarray:
    """Detector states of devices that reported every ``interval_s``, last at ``last_ts``."""
    readings = 20
    rows = np.repeat(np.arange(last_ts.size), readings)
    ts = (last_ts[:, None] - interval_s * np.arange(readings)[::-1]).ravel()
    values = 20.0 + np.random.default_rng(0).normal(0.0, 0.5, ts.size)
    return screen(fresh_states(last_ts.size), rows, ts, values, DetectorConfig()).states


def test_quiet_is_a_lower_bar_than_the_dropout_limit_and_a_reported_silence_stays_quiet() -> None:
    # Given devices reporting every 10 s: one heard 5 s ago, one 25 s ago (missed two
    # readings, short of the 50 s dropout limit) and one 100 s ago
    states = warm_states(np.array([NOW - 5, NOW - 25, NOW - 100]))
    config = DetectorConfig()
    # When the quiet ones are read, then the sweep marks the silent one
    before = quiet_devices(states, NOW, config)
    find_dropouts(states, NOW, config)
    after = quiet_devices(states, NOW - 60, config)
    # Then the second and third are quiet, and the reported one stays quiet whatever the clock
    assert before.judged.tolist() == [True, True, True]
    assert before.quiet.tolist() == [False, True, True]
    assert after.quiet.tolist() == [False, False, True]


def test_a_device_still_warming_up_is_not_judged() -> None:
    # Given a device with two readings only: its usual interval is not known yet
    states = screen(
        fresh_states(1), np.array([0, 0]), np.array([NOW - 200, NOW - 190]), np.array([1.0, 1.0]),
        DetectorConfig(),
    ).states  # fmt: skip
    # Then it is neither quiet nor part of any share
    quiet = quiet_devices(states, NOW, DetectorConfig())
    assert quiet.judged.tolist() == [False] and quiet.quiet.tolist() == [False]


def test_devices_that_died_long_ago_do_not_make_a_fresh_dropout_look_like_an_outage() -> None:
    # Given devices reporting every 10 s: two thirds silent for 2 h (reported then), one
    # silent for 100 s, the rest reporting
    last = np.array([NOW - 7200.0] * 20 + [NOW - 100.0] + [NOW - 5.0] * 9)
    states = warm_states(last)
    config = DetectorConfig()
    # Each long silence was reported back then (the sweep marked it)
    find_dropouts(states, np.where(last < NOW - 3600, last + 60.0, last), config)
    # When the quiet ones are read with a one-hour window
    quiet = quiet_devices(states, NOW, config, FoldConfig(together_s=3600.0))
    # Then only the fresh silence is quiet: the old ones are no part of an event now
    assert np.flatnonzero(quiet.quiet).tolist() == [20]


def test_a_folded_device_is_alerted_alone_only_once_its_group_is_back_and_its_limit_passed() -> (
    None
):
    # Given a region reporting again: group 1 all back, group 2 (a gateway) still silent
    examined_group = np.array([1] * 20 + [2] * 20 + [3] * 60, dtype=np.int64)
    examined_quiet = np.array([False] * 19 + [True] + [True] * 20 + [False] * 60)
    # When three folded devices are judged: one of group 1 silent, one of group 1 heard
    # from since, one of the silent group 2
    group = np.array([1, 1, 2], dtype=np.int64)
    over = outage_over(examined_group, examined_quiet, group)
    assert over.tolist() == [True, True, False]
    since = np.array([100.0, 100.0, 100.0])
    last = np.array([100.0, 130.0, 100.0])
    limit = np.full(3, 10.0)
    # Then at the first look the silent device of group 1 is armed, not alerted; the one
    # heard from is back; the gateway's device waits with its group
    first = settle_folded(since, np.full(3, np.nan), last, limit, over, 140.0)
    assert (first.back.tolist(), first.arm.tolist(), first.alert.tolist()) == (
        [False, True, False], [True, False, False], [False, False, False],
    )  # fmt: skip
    # And a dropout limit after it was armed, it is alerted on its own
    armed = np.array([140.0, np.nan, np.nan])
    later = settle_folded(since, armed, last, limit, over, 150.0)
    assert later.alert.tolist() == [True, False, False]
