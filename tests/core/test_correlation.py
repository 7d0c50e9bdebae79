"""The correlator: alerts fold into few incidents, grow, link into cascades, and resolve."""

from __future__ import annotations

import msgpack
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import detection as det
from scheduler.alert import Alert, Silence
from scheduler.correlation import Correlator, CorrelatorConfig
from scheduler.incident import IncidentUpdate
from scheduler.injection import AnomalySpec, inject, normal_traffic
from scheduler.severity import Severity

CFG = CorrelatorConfig()
T0 = 1_700_000_000.0


def alerts_for(devices: range, group: str, region: str = "eu-west", ts: float = T0) -> list[Alert]:
    return [Alert(d, group, region, ts + 0.01 * i, "spike") for i, d in enumerate(devices)]


def firing(updates: list[IncidentUpdate]) -> list[IncidentUpdate]:
    return [u for u in updates if u.status == "firing"]


def test_alerts_of_one_group_fold_into_one_incident_after_group_wait() -> None:
    corr = Correlator(CFG)
    # Given 20 alerts of one group arriving together
    # When observed, nothing is notified before group wait
    assert corr.observe(alerts_for(range(20), "pumps"), now_ts=T0) == []
    # Then after group wait one incident fires, with all 20 devices and a bounded sample
    updates = corr.tick(T0 + CFG.group_wait_s)
    assert len(updates) == 1
    incident = updates[0].incident
    assert updates[0].status == "firing"
    assert incident.device_count == 20
    assert len(incident.sample_device_ids) == CFG.sample_size
    assert incident.first_seen_ts == T0
    assert incident.severity == Severity.WARNING


def test_a_growing_incident_sends_updates_no_faster_than_group_interval() -> None:
    corr = Correlator(CFG)
    corr.observe(alerts_for(range(10), "pumps"), now_ts=T0)
    corr.tick(T0 + 1)
    # Given more devices of the same group alerting soon after
    quiet = corr.observe(alerts_for(range(10, 20), "pumps", ts=T0 + 2), now_ts=T0 + 2)
    # Then no update until group interval has passed since the last notice
    assert quiet == []
    updates = corr.tick(T0 + 1 + CFG.group_interval_s)
    assert [u.status for u in updates] == ["updated"]
    assert updates[0].incident.device_count == 20
    assert updates[0].incident.last_seen_ts > T0 + 2


def test_a_severity_rise_is_notified_at_once() -> None:
    corr = Correlator(CFG)
    corr.observe(alerts_for(range(3), "pumps"), now_ts=T0)
    corr.tick(T0 + 1)
    # When the incident jumps past the paging breadth
    updates = corr.observe(alerts_for(range(3, CFG.page_devices + 3), "pumps"), now_ts=T0 + 2)
    # Then the update goes out without waiting for group interval
    assert [(u.status, u.incident.severity) for u in updates] == [("updated", Severity.PAGE)]


def test_an_incident_resolves_after_the_resolve_timeout_without_alerts() -> None:
    corr = Correlator(CFG)
    corr.observe(alerts_for(range(5), "pumps"), now_ts=T0)
    corr.tick(T0 + 1)
    assert corr.tick(T0 + CFG.resolve_timeout_s - 1) == []
    updates = corr.tick(T0 + CFG.resolve_timeout_s)
    assert [u.status for u in updates] == ["resolved"]
    assert corr.open_incidents() == []
    # And a later alert of the group opens a new incident with a new id
    corr.observe(alerts_for(range(1), "pumps", ts=T0 + 1_000), now_ts=T0 + 1_000)
    again = corr.tick(T0 + 1_001)
    assert again[0].incident.incident_id != updates[0].incident.incident_id


def test_groups_of_one_region_failing_together_are_linked_as_a_cascade() -> None:
    corr = Correlator(CFG)
    # Given three groups of one region alerting within the cascade window, and one elsewhere
    corr.observe(alerts_for(range(0, 10), "pumps"), now_ts=T0)
    corr.observe(alerts_for(range(10, 20), "valves", ts=T0 + 5), now_ts=T0 + 5)
    corr.observe(alerts_for(range(20, 30), "meters", ts=T0 + 9), now_ts=T0 + 9)
    corr.observe(alerts_for(range(30, 40), "meters", region="us-east", ts=T0 + 9), now_ts=T0 + 9)
    incidents = {(i.group, i.region): i for i in corr.open_incidents()}
    # Then the three share the first one's id as cascade id and page; the other stands alone
    root = incidents[("pumps", "eu-west")].incident_id
    linked = [incidents[(g, "eu-west")] for g in ("pumps", "valves", "meters")]
    assert {i.cascade_id for i in linked} == {root}
    assert {i.severity for i in linked} == {Severity.PAGE}
    assert incidents[("meters", "us-east")].cascade_id is None
    assert incidents[("meters", "us-east")].severity == Severity.WARNING


def test_a_cascade_over_10000_devices_makes_one_incident_per_group_not_10000() -> None:
    # Given 24,000 devices in 4 groups, a cascade injected into 2 groups, screened by the detector
    traffic = normal_traffic(31, 24_000, 60, interval_s=(1.0, 1.0), jitter=0.0, n_groups=4)
    spec = AnomalySpec(
        "cascade",
        n_groups=2,
        magnitude=30.0,
        cascade_kind="shift",
        earliest_onset_ts=traffic.ts.min() + 40,
        latest_onset_ts=traffic.ts.min() + 40,
    )
    injected = inject(32, traffic.device_id, traffic.ts, traffic.value, traffic.group, spec)
    states = det.fresh_states(24_000)
    corr = Correlator(CFG)
    notices: list[IncidentUpdate] = []
    for part in np.array_split(np.arange(traffic.ts.size), 240):
        result = det.screen(
            states,
            traffic.device_id[part].astype(np.intp),
            traffic.ts[part],
            injected.value[part],
            det.DetectorConfig(),
        )
        states = result.states
        hit = part[result.alert]
        now_ts = float(traffic.ts[part][-1])
        alerts = [
            Alert(
                int(traffic.device_id[i]),
                f"g{traffic.group[i]}",
                "eu-west",
                float(traffic.ts[i]),
                det.KIND_NAMES[kind],
            )
            for i, kind in zip(hit, result.kind[result.alert], strict=True)
        ]
        notices += corr.observe(alerts, now_ts)
    notices += corr.tick(float(traffic.ts.max()) + CFG.group_interval_s)
    # Then the hit groups make one incident each, linked as one cascade; background false
    # alerts of other groups can add an incident per group at most, never one per device
    affected = len(injected.truth)
    incidents = {u.incident.incident_id: u.incident for u in notices}
    big = [i for i in incidents.values() if i.device_count >= 100]
    print(
        f"cascade: {affected} devices -> {len(incidents)} incidents ({len(big)} from the "
        f"cascade), {len(notices)} notices"
    )
    assert affected >= 10_000
    assert len(big) == spec.n_groups
    assert len({i.cascade_id for i in big}) == 1
    assert len(incidents) <= len(np.unique(traffic.group))
    assert sum(i.device_count for i in big) >= 0.95 * affected
    assert len(notices) <= 4 * len(incidents)


def test_the_state_round_trips_through_msgpack_and_behaves_the_same() -> None:
    corr = Correlator(CFG)
    corr.observe(alerts_for(range(30), "pumps"), now_ts=T0)
    corr.observe(alerts_for(range(30, 35), "valves", ts=T0 + 3), now_ts=T0 + 3)
    blob = msgpack.packb(corr.to_state())
    restored = Correlator.from_state(msgpack.unpackb(blob), CFG)
    assert restored.to_state() == corr.to_state()
    later = alerts_for(range(35, 40), "valves", ts=T0 + 50)
    assert restored.observe(later, T0 + 50) == corr.observe(later, T0 + 50)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.sampled_from(["a", "b", "c"]), st.floats(0, 100)),
        max_size=60,
    )
)
def test_replaying_the_same_alerts_gives_the_same_notices(
    raw: list[tuple[int, str, float]],
) -> None:
    alerts = [Alert(d, g, "eu-west", T0 + t, "spike") for d, g, t in raw]

    def replay() -> list[IncidentUpdate]:
        corr = Correlator(CFG)
        out = corr.observe(alerts, T0 + 100)
        return out + corr.tick(T0 + 200) + corr.tick(T0 + 1_000)

    first = replay()
    assert first == replay()
    # And however many alerts, at most one incident per group key
    assert len({u.incident.incident_id for u in first}) <= len({g for _, g, _ in raw})


def dropouts(devices: range, region: str = "eu-west", groups: int = 100) -> list[Alert]:
    return [Alert(d, f"g{d % groups}", region, T0 + 0.001 * d, "dropout") for d in devices]


def test_a_fleet_wide_reconnect_folds_into_one_incident_per_region_not_one_per_group() -> None:
    corr = Correlator(CFG)
    # Given 30,000 devices of 100 groups coming back after an outage, in batches of 3,000
    notices: list[IncidentUpdate] = []
    for start in range(0, 30_000, 3_000):
        notices += corr.observe(dropouts(range(start, start + 3_000)), now_ts=T0 + 1)
    notices += corr.tick(T0 + 2)
    # Then one "mass_reconnect" incident holds every device, with no device set kept
    incidents = {u.incident.incident_id: u.incident for u in notices}
    assert len(incidents) == 1
    (storm,) = incidents.values()
    assert (storm.storm, storm.group, storm.device_count) == ("mass_reconnect", "*", 30_000)
    assert len(storm.sample_device_ids) == CFG.sample_size
    assert corr.devices(storm.incident_id) == frozenset()
    assert len(msgpack.packb(corr.to_state())) < 2_000


def test_a_sweep_storm_is_an_ingest_gap_and_later_small_batches_join_it() -> None:
    corr = Correlator(CFG)
    corr.observe(dropouts(range(500)), now_ts=T0, silent_now=True)
    # When a few more silent devices of the region are reported later, below the threshold
    corr.observe(dropouts(range(500, 510)), now_ts=T0 + 5)
    # And a few in another region
    corr.observe(dropouts(range(3), region="us-east", groups=1), now_ts=T0 + 5)
    by_region = {i.region: i for i in corr.open_incidents()}
    # Then the gap counts all 510 devices; the other region's few devices group as usual
    assert (by_region["eu-west"].storm, by_region["eu-west"].device_count) == ("ingest_gap", 510)
    assert (by_region["us-east"].storm, by_region["us-east"].device_count) == (None, 3)


def test_a_few_dropouts_still_group_per_device_as_before() -> None:
    corr = Correlator(CFG)
    corr.observe(dropouts(range(CFG.storm_devices - 1), groups=1), now_ts=T0)
    (inc,) = corr.open_incidents()
    assert (inc.storm, inc.group, inc.device_count) == (None, "g0", CFG.storm_devices - 1)


def test_silences_trickling_in_below_the_threshold_merge_into_one_storm_before_firing() -> None:
    corr = Correlator(CFG)
    # Given a reconnect arriving in small batches of 40 devices over 100 groups
    notices: list[IncidentUpdate] = []
    for k, start in enumerate(range(0, 400, 40)):
        notices += corr.observe(dropouts(range(start, start + 40)), now_ts=T0 + 0.04 * k)
    notices += corr.tick(T0 + 1)
    # Then no per-group incident fired: one storm holds all 400 devices
    assert [(u.incident.storm, u.incident.device_count) for u in notices] == [
        ("mass_reconnect", 400)
    ]


def test_a_region_silence_folded_by_the_sweep_is_one_ingest_gap_with_its_device_count() -> None:
    corr = Correlator(CFG)
    # Given a sweep that folded 40,000 silent devices of eu-west into one event, in two
    # sweeps, and found 2 devices of us-east silent on their own
    gap = Silence("eu-west", "*", 30_000, T0 - 12, T0 - 10, tuple(range(20)))
    more = Silence("eu-west", "*", 10_000, T0 - 11, T0 - 9, tuple(range(20, 30)))
    notices = corr.observe([], T0, silent_now=True, silences=[gap])
    notices += corr.observe(dropouts(range(2), region="us-east"), T0 + 1, True, [more])
    notices += corr.tick(T0 + 1 + CFG.silence_wait_s)
    by_region = {u.incident.region: u.incident for u in notices}
    # Then eu-west has one ingest gap of 40,000 devices with no device set (nothing to
    # accelerate), and us-east its own small incidents
    gap_incident = by_region["eu-west"]
    assert (gap_incident.storm, gap_incident.group) == ("ingest_gap", "*")
    assert gap_incident.device_count == 40_000
    assert (gap_incident.first_seen_ts, gap_incident.last_seen_ts) == (T0 - 12, T0 - 9)
    assert len(gap_incident.sample_device_ids) == CFG.sample_size
    assert corr.devices(gap_incident.incident_id) == frozenset()
    assert by_region["us-east"].storm is None


def test_a_group_silence_is_its_own_gap_and_survives_a_state_round_trip() -> None:
    corr = Correlator(CFG)
    # Given one gateway's group g7 folded silent while the region reports
    corr.observe([], T0, True, [Silence("eu-west", "g7", 300, T0 - 5, T0 - 4, (1, 2))])
    # When the state is stored and restored, and more of g7 is folded
    corr = Correlator.from_state(msgpack.unpackb(msgpack.packb(corr.to_state())), CFG)
    corr.observe([], T0 + 2, True, [Silence("eu-west", "g7", 20, T0 - 3, T0 - 3, (3,))])
    # And a lone device of another group drops out
    corr.observe(dropouts(range(1), groups=1), T0 + 2, silent_now=True)
    # Then g7's gap holds 320 devices in one incident; the lone dropout stays apart
    incidents = {(i.group, i.storm): i.device_count for i in corr.open_incidents()}
    assert incidents == {("g7", "ingest_gap"): 320, ("g0", None): 1}


def test_returns_of_one_outage_spread_over_small_batches_are_one_storm_not_one_per_group() -> None:
    corr = Correlator(CFG)
    # Given a region's outage ending on a loaded machine: premium returns screened first,
    # a few per group in tiny batches, some groups' returns folded by screening already
    notices: list[IncidentUpdate] = []
    for k in range(6):
        batch = [Alert(100 * g + k, f"g{g}", "eu-west", T0 + 0.1 * k, "dropout") for g in range(6)]
        notices += corr.observe(batch, now_ts=T0 + 0.1 * k)
    part = Silence("eu-west", "g3", 12, T0 - 7, T0 - 6, (300, 301))
    notices += corr.observe([], T0 + 1, silences=[part])
    # When standard's returns, folded into a region-wide event, arrive seconds later
    # (past the ordinary group wait, within the silence wait)
    notices += corr.tick(T0 + 2 * CFG.group_wait_s + 1)
    whole = Silence("eu-west", "*", 1_500, T0 - 7, T0 - 6, tuple(range(1_000, 1_010)))
    notices += corr.observe([], T0 + CFG.silence_wait_s - 0.5, silences=[whole])
    notices += corr.tick(T0 + 2 * CFG.silence_wait_s)
    # Then one incident was notified: the region's reconnect, counting every device
    assert {u.incident.incident_id for u in notices} == {notices[0].incident.incident_id}
    storm = notices[-1].incident
    assert (storm.storm, storm.group, storm.device_count) == (
        "mass_reconnect",
        "*",
        36 + 12 + 1_500,
    )


def test_one_groups_silence_is_notified_on_its_own_after_the_silence_wait() -> None:
    corr = Correlator(CFG)
    # Given dropouts of one group only, returning together
    corr.observe(dropouts(range(30), groups=1), now_ts=T0)
    # Then the group's incident waits for a storm that may form, then fires on its own
    assert corr.tick(T0 + CFG.group_wait_s) == []
    updates = corr.tick(T0 + CFG.silence_wait_s)
    assert [(u.incident.group, u.incident.storm, u.incident.device_count) for u in updates] == [
        ("g0", None, 30)
    ]


def test_a_return_fold_is_a_mass_reconnect_and_joins_an_open_ingest_gap() -> None:
    # Given returns that screening folded into events, with no sweep having seen the outage
    corr = Correlator(CFG)
    back = Silence("eu-west", "*", 800, T0 - 5, T0 - 4, (1, 2, 3))
    corr.observe([], T0, silent_now=False, silences=[back])
    # Then the region's storm is a mass reconnect
    assert [(i.storm, i.device_count) for i in corr.open_incidents()] == [("mass_reconnect", 800)]
    # Given instead an outage a sweep saw while it lasted, then its devices' returns folded
    corr = Correlator(CFG)
    corr.observe([], T0, silent_now=True, silences=[Silence("eu-west", "*", 800, T0 - 9, T0 - 8)])
    corr.observe([], T0 + 5, silent_now=False, silences=[back])
    # Then the outage and its end are one ingest gap
    assert [(i.storm, i.device_count) for i in corr.open_incidents()] == [("ingest_gap", 1_600)]
