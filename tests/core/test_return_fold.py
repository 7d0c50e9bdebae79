"""Returns fold at screening: a fleet coming back from one shared silence is one event, a
device back from its own silence among reporting peers is its own dropout alert."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.anomaly_kind import DROPOUT
from scheduler.detection import screen
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import STATE_FIELDS, fresh_states
from scheduler.dropout_fold import REGION_WIDE
from scheduler.model import Batch, Topology
from scheduler.registry import build_registry
from scheduler.return_fold import common_silence_ts, fold_alerted_returns, fold_returns

CFG = DetectorConfig()
NOW = 1_700_000_000.0
INTERVAL_S = 0.3


def warm_states(n_devices: int, readings: int = 12) -> np.ndarray:
    """States of ``n_devices`` that reported every ``INTERVAL_S`` until ``NOW``."""
    states = fresh_states(n_devices)
    rng = np.random.default_rng(0)
    offset = rng.uniform(0, INTERVAL_S, n_devices)
    for r in range(readings):
        ts = NOW - (readings - 1 - r) * INTERVAL_S - offset
        values = 20.0 + rng.normal(0, 0.5, n_devices)
        states = screen(states, np.arange(n_devices), ts, values, CFG).states
    return states


def batch_of(device_index: np.ndarray, ts: np.ndarray) -> Batch:
    rng = np.random.default_rng(1)
    return Batch(
        batch_id="b",
        region="eu-west",
        tier="standard",
        metrics=("value",),
        device_id=(device_index + 1000).astype(np.uint64),
        ts=ts,
        values=(20.0 + rng.normal(0, 0.5, ts.size)).reshape(-1, 1),
        ingest_ts=ts,
    )


def screened_alerts(
    states: np.ndarray, device_index: np.ndarray, ts: np.ndarray, groups: np.ndarray | None = None
) -> tuple[int, np.ndarray, list[dict[str, object]]]:
    """Screen a batch as screening does (the states of its devices only), then fold its
    returns: (returns screened, kinds of the device alerts kept, silences)."""
    present, device_index = np.unique(device_index, return_inverse=True)
    states = states[present]
    values = 20.0 + np.random.default_rng(3).normal(0, 0.5, ts.size)
    result = screen(states, device_index, ts, values, CFG)
    rows = np.flatnonzero(result.alert)
    kinds = result.kind[rows]
    batch = batch_of(present[device_index], ts)
    registry = None
    if groups is not None:
        n = groups.size
        registry = build_registry(
            Topology(),
            np.arange(n, dtype=np.uint64) + 1000,
            np.zeros(n, dtype=np.uint8),
            np.zeros(n, dtype=np.uint8),
            groups,
            np.ones(n, dtype=np.uint64),
            np.zeros(n),
            np.zeros(n),
        )
    devices = present.astype(np.uint64) + 1000
    keep, silences = fold_alerted_returns(
        batch, states, device_index, devices, rows, kinds, CFG, registry
    )
    returned = int(np.count_nonzero(kinds == DROPOUT))
    return returned, kinds[keep], silences


def test_a_fleet_back_from_a_two_second_pause_is_one_event_not_an_alert_per_device() -> None:
    # Given 300 devices reporting every 0.3 s (dropout limit 1.5 s)
    states = warm_states(300)
    # When all of them come back after 2.5 s of silence (a producer stall, a network blip)
    ts = NOW + 2.5 + np.random.default_rng(2).uniform(0, 0.3, 300)
    returned, kept, silences = screened_alerts(states, np.arange(300), ts)
    # Then screening saw them end a silence, and emits them as one region-wide event
    assert returned == 300
    assert DROPOUT not in kept
    assert [(s["group"], s["devices"]) for s in silences] == [("*", 300)]
    # whose first/last seen are the devices' last readings before the silence
    assert NOW - INTERVAL_S <= silences[0]["first_ts"] <= silences[0]["last_ts"] <= NOW


def test_a_fleet_slowed_past_its_dropout_limits_is_one_event() -> None:
    # Given 300 devices reporting every 0.3 s (dropout limit about 1.5 s), whose source
    # then slows down: 240 report again 1.1-1.4 s after their last reading, 60 after 1.7 s
    states = warm_states(300)
    last_ts = states[:, STATE_FIELDS.index("last_ts")]
    gap_s = np.r_[np.linspace(1.1, 1.4, 240), np.full(60, 1.7)]
    returned, kept, silences = screened_alerts(states, np.arange(300), last_ts + gap_s)
    # Then the 60 past their limit are one event, not an alert each, though at no instant
    # were most devices silent past their own limit together
    assert returned == 60
    assert DROPOUT not in kept
    assert [(s["group"], s["devices"]) for s in silences] == [("*", 60)]


def test_a_lone_return_is_alerted_even_when_its_peers_were_slow() -> None:
    # Given 300 devices whose source slowed (gaps of 1.1-1.4 s), one of them past its limit
    states = warm_states(300)
    last_ts = states[:, STATE_FIELDS.index("last_ts")]
    gap_s = np.r_[np.linspace(1.1, 1.4, 299), 1.7]
    returned, kept, silences = screened_alerts(states, np.arange(300), last_ts + gap_s)
    # Then its return is its own dropout alert: one return is no storm
    assert returned == 1
    assert kept[kept == DROPOUT].size == 1 and silences == []


def test_a_device_back_from_its_own_silence_among_reporting_peers_is_alerted() -> None:
    # Given 300 devices reporting every 0.3 s; device 7 was silent for 3 s meanwhile
    states = warm_states(300)
    peers = np.array([i for i in range(300) if i != 7])
    # When the batch holds the peers' readings every 0.3 s through the silence, then 7's return
    steps = np.arange(1, 11)
    index = np.concatenate([np.repeat(peers, steps.size), [7]])
    ts = np.concatenate([NOW + np.tile(steps * INTERVAL_S, peers.size), [NOW + 3.0]])
    returned, kept, silences = screened_alerts(states, index, ts)
    # Then device 7 is its own dropout alert and nothing folds
    assert returned == 1
    assert kept[kept == DROPOUT].size == 1
    assert silences == []


def test_a_group_back_from_an_outage_while_its_region_reported_is_one_event_of_the_group() -> None:
    # Given 10 groups of 30 devices reporting every 0.3 s; group 4's gateway was down 3 s
    states = warm_states(300)
    groups = np.repeat(np.arange(10), 30)
    down = np.flatnonzero(groups == 4)
    up = np.flatnonzero(groups != 4)
    steps = np.arange(1, 11)
    # When the batch holds the others reporting through it, and group 4 coming back
    index = np.concatenate([np.repeat(up, steps.size), down])
    ts = np.concatenate([NOW + np.tile(steps * INTERVAL_S, up.size), np.full(down.size, NOW + 3.0)])
    returned, kept, silences = screened_alerts(states, index, ts, groups)
    # Then group 4's returns are one event of group 4, none alerted alone
    assert returned == 30
    assert DROPOUT not in kept
    assert [(s["group"], s["devices"]) for s in silences] == [("4", 30)]


def test_a_handful_of_returns_together_is_each_alerted() -> None:
    # Given 300 devices of which 5 (below the fewest that fold) come back from one silence
    states = warm_states(300)
    index = np.arange(5)
    returned, kept, silences = screened_alerts(states, index, np.full(5, NOW + 3.0))
    # Then each is its own dropout: a handful is no outage
    assert returned == 5
    assert kept[kept == DROPOUT].size == 5 and silences == []


def test_two_outages_at_different_times_in_one_batch_are_two_events() -> None:
    # Given groups 1 and 2 (30 devices each) silent at different times, the rest reporting
    states = warm_states(300)
    groups = np.repeat(np.arange(10), 30)
    one, two = np.flatnonzero(groups == 1), np.flatnonzero(groups == 2)
    rest = np.flatnonzero((groups != 1) & (groups != 2))
    steps = np.arange(1, 27)
    # group 1 silent from NOW to NOW + 3.5 s; group 2 reports until NOW + 3.6, then 7.5 s
    index = np.concatenate([np.repeat(rest, steps.size), one, np.repeat(two, 12), two])
    ts = np.concatenate(
        [
            NOW + np.tile(steps * INTERVAL_S, rest.size),
            np.full(one.size, NOW + 3.5),
            NOW + np.tile(np.arange(1, 13) * INTERVAL_S, two.size),
            np.full(two.size, NOW + 7.5),
        ]
    )
    returned, kept, silences = screened_alerts(states, index, ts, groups)
    # Then each group's return is its own event
    assert returned == 60 and DROPOUT not in kept
    assert sorted((s["group"], s["devices"]) for s in silences) == [("1", 30), ("2", 30)]


def test_the_common_silence_is_where_most_silences_overlap() -> None:
    # Given three silences overlapping on [4, 5] and one elsewhere
    since = np.array([1.0, 2.0, 4.0, 10.0])
    until = np.array([5.0, 6.0, 7.0, 11.0])
    # Then the span where most overlap is [4, 5]
    assert common_silence_ts(since, until) == (4.0, 5.0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 99), st.floats(1.6, 30.0), st.integers(0, 3)),
        min_size=1,
        max_size=120,
        unique_by=lambda r: r[0],
    )
)
def test_every_return_is_reported_exactly_once_alone_or_in_one_event(
    rows: list[tuple[int, float, int]],
) -> None:
    # Given any devices of 4 groups coming back after silences of any length
    states = warm_states(100, readings=8)
    index = np.array([r[0] for r in rows], dtype=np.intp)
    ts = NOW + np.array([r[1] for r in rows])
    groups = np.array([r[2] for r in rows] + [0] * 100, dtype=np.int64)[:100]
    values = 20.0 + np.random.default_rng(3).normal(0, 0.5, ts.size)
    result = screen(states, index, ts, values, CFG)
    returns = np.flatnonzero(result.kind == DROPOUT)
    # When their returns are folded
    folded = fold_returns(states, index, ts, returns, groups, CFG)
    # Then each return is alerted alone or held by exactly one event
    members = [m for e in folded.events for m in e.members.tolist()]
    everyone = sorted(folded.individual.tolist() + members)
    assert everyone == list(range(returns.size))
    assert all(e.group in (REGION_WIDE, 0, 1, 2, 3) for e in folded.events)
