"""Correlator: folds device alerts into incidents, in the manner of Alertmanager.

Alerts with one group key (group, region) fold into one open incident. Its first
notification waits ``group_wait_s`` so the alerts of one event arrive together; while
it grows, updates go out at most every ``group_interval_s`` (at once when severity
rises: a page must not wait for the interval); after ``resolve_timeout_s`` without a
new alert it resolves. Incidents of one region that open together link into a cascade
whose breadth sets their severity (``scheduler.cascade``). Alerts and silences are
``scheduler.alert``'s; incidents and their updates are ``scheduler.incident``'s.

Silence storms fold before they become work: when one alerts batch (a screened batch,
a dropout sweep) holds ``storm_devices`` or more dropout alerts in one region, whatever
their groups, they become one region-wide storm incident (group ``*``) that counts its
devices but keeps no device set, and the adapter never accelerates routine work for it:
a gateway or network outage is one event, not one per device or per group. Its kind
says how the silence was seen: "ingest_gap" while it lasted (a dropout sweep found the
devices silent), "mass_reconnect" only when it ended (screening saw the devices come
back). The returns of an outage already open as an "ingest_gap" join it: the outage and
its end are one event. While a storm incident is open, later dropouts in its region fold
into it too, however small their batch.

A silence of part of a region (dropout alerts of one group, a group's folded silence)
waits ``silence_wait_s`` for its first notice, longer than ``group_wait_s``: the returns
of one outage reach the correlator spread over as long as screening lags (premium's
first, standard's seconds later under load; in many small batches on a slow machine),
and each group's few must not fire before the region's storm forms. If, before any of
them has been notified, the region's pending silences reach ``storm_devices`` with no
group holding half of them (or a region storm opens), they merge into the storm instead
of firing one by one; one group's silence, however large, stays that group's event.

A sweep or screening that folded a group's or a region's silence itself
(``scheduler.dropout_fold``, ``scheduler.return_fold``) hands it over as a ``Silence``,
one event with its device count: a region-wide one opens (or grows) the region's storm,
a group's a storm of that group alone (merged into a region storm that forms while it
waits), and either joins a region-wide storm already open. Neither keeps a device set,
so neither is accelerated.

A value anomaly across many devices (a cascade) still folds per group, since which
groups it hit is the finding; the work it causes is bounded by the anomaly work budget
(``scheduler.work_budget``).

Timers run on the processing clock (``now_ts``, passed in); first/last seen are the
alerts' event times. The state is plain dicts, lists and numbers (``to_state``) so an
adapter can keep it in Redis with msgpack.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.alert import INGEST_GAP, MASS_RECONNECT, SILENCE_KIND, WHOLE_REGION, Alert, Silence
from scheduler.cascade import link_cascade, rate
from scheduler.incident import Incident, IncidentUpdate, OpenIncident, incident_id


@dataclass(frozen=True)
class CorrelatorConfig:
    """Grouping timers (seconds of processing time) and severity thresholds."""

    #: Short, because detection must be seen within seconds (DESIGN: DETECTION_BOUND_S).
    group_wait_s: float = 0.5
    group_interval_s: float = 30.0
    resolve_timeout_s: float = 300.0
    cascade_window_s: float = 60.0
    sample_size: int = 10
    warning_devices: int = 5
    critical_devices: int = 50
    page_devices: int = 500
    critical_groups: int = 2
    page_groups: int = 3
    #: Dropout alerts in one region in one batch that make a storm (see module doc).
    #: A screened batch is at most 5,000 readings of a region (~0.1 s of its traffic at
    #: full load); 200 devices of one kind in it is far past an ordinary group
    #: incident (critical at 50) and well inside any fleet-wide silence or reconnect.
    storm_devices: int = 200
    #: A silence of part of a region (dropout alerts of a group, a group's folded silence)
    #: waits this long for its first notice instead of ``group_wait_s``, so that a region
    #: storm forming meanwhile absorbs it. Returns of one outage reach the correlator over
    #: as long as screening lags: premium's returns first, standard's up to its 5 s
    #: detection bound later (issue 12), each group's a few at a time when batches are
    #: small. A dropout is already late by five of the device's intervals; 5 s more is
    #: what keeps one outage from paging once per group.
    silence_wait_s: float = 5.0


class Correlator:
    """Folds alerts into incidents; pure, with the clock passed in."""

    def __init__(self, config: CorrelatorConfig | None = None) -> None:
        self.config = config or CorrelatorConfig()
        self._open: dict[tuple[str, str], OpenIncident] = {}

    def observe(
        self,
        alerts: Iterable[Alert],
        now_ts: float,
        silent_now: bool = False,
        silences: Iterable[Silence] = (),
    ) -> list[IncidentUpdate]:
        """Fold ``alerts`` (one batch) in and return the notifications due at ``now_ts``.

        ``silent_now``: the batch comes from a sweep of devices that are silent now (its
        dropout storm is an "ingest_gap"), not from readings that ended a silence.
        ``silences``: events the sweep folded already, each one incident's worth."""
        for silence in silences:
            self._fold_silence(silence, now_ts, silent_now)
        by_kind: dict[tuple[str, str], list[Alert]] = {}
        for alert in alerts:
            by_kind.setdefault((alert.kind, alert.region), []).append(alert)
        by_key: dict[tuple[str, str], list[Alert]] = {}
        for (kind, region), same in sorted(by_kind.items()):
            storm = self._storm_key(kind, region, len(same), silent_now)
            if storm is not None:
                self._fold_storm(storm, kind, same, now_ts)
                continue
            for alert in same:
                by_key.setdefault((alert.group, alert.region), []).append(alert)
        for key in sorted(by_key):
            batch = sorted(by_key[key], key=lambda a: (a.ts, a.device_id))
            self._fold(key, batch, now_ts)
        self._merge_silences(now_ts, silent_now)
        rate(self._open.values(), self.config)
        return self.tick(now_ts)

    def tick(self, now_ts: float) -> list[IncidentUpdate]:
        """Notifications due at ``now_ts``: first notices, growth updates, resolutions."""
        cfg = self.config
        updates: list[IncidentUpdate] = []
        for key in sorted(self._open, key=lambda k: self._open[k].incident_id):
            inc = self._open[key]
            if now_ts - inc.last_alert_ts >= cfg.resolve_timeout_s:
                del self._open[key]
                if inc.notified_ts is not None:
                    updates.append(IncidentUpdate("resolved", inc.snapshot(), now_ts))
                continue
            if inc.notified_ts is None:
                due = now_ts - inc.opened_ts >= first_notice_wait_s(inc.group, inc.kinds, cfg)
                status = "firing"
            else:
                interval_over = now_ts - inc.notified_ts >= cfg.group_interval_s
                due = inc.dirty and (interval_over or inc.severity > inc.notified_severity)
                status = "updated"
            if due:
                inc.notified_ts = now_ts
                inc.notified_severity = inc.severity
                inc.dirty = False
                updates.append(IncidentUpdate(status, inc.snapshot(), now_ts))
        return updates

    def open_incidents(self) -> list[Incident]:
        return [inc.snapshot() for inc in sorted(self._open.values(), key=lambda i: i.incident_id)]

    def _storm_key(
        self, kind: str, region: str, n_alerts: int, silent_now: bool
    ) -> tuple[str, str] | None:
        """The storm incident these alerts fold into, or None for ordinary grouping."""
        key = self._open_region_storm(kind, region)
        if key is not None:
            return key
        if kind != SILENCE_KIND or n_alerts < self.config.storm_devices:
            return None
        return (storm_key_group(silence_storm(silent_now), WHOLE_REGION), region)

    def _open_region_storm(self, kind: str, region: str) -> tuple[str, str] | None:
        """The key of ``region``'s open region-wide storm of ``kind``, if there is one."""
        for key, inc in self._open.items():
            region_wide = inc.storm is not None and inc.group == WHOLE_REGION
            if region_wide and key[1] == region and kind in inc.kinds:
                return key
        return None

    def _merge_silences(self, now_ts: float, silent_now: bool) -> None:
        """Fold a region's not-yet-notified silences of part of it (dropout incidents of a
        group, a group's folded silence) into its storm (module doc)."""
        by_region: dict[str, list[tuple[str, str]]] = {}
        for key, inc in self._open.items():
            if _pending_part_silence(inc):
                by_region.setdefault(inc.region, []).append(key)
        for region, keys in sorted(by_region.items()):
            devices = sum(self._open[k].device_count for k in keys)
            # Seen silent by a sweep in any part: the storm is the outage, not its end.
            seen_silent = silent_now or any(self._open[k].storm == INGEST_GAP for k in keys)
            storm = self._storm_key(SILENCE_KIND, region, devices, seen_silent)
            # One group's silence, however large, is that group's event, not its region's
            # (nor is it with a few stray dropouts elsewhere): a storm spreads over groups.
            largest = max(self._open[k].device_count for k in keys)
            region_open = self._open_region_storm(SILENCE_KIND, region) is not None
            if storm is None or (2 * largest >= devices and not region_open):
                continue
            for key in sorted(keys):
                part = self._open.pop(key)
                alerts = [
                    Alert(d, part.group, region, part.first_seen_ts, SILENCE_KIND)
                    for d in part.sample
                ]
                inc = self._fold_storm(storm, SILENCE_KIND, alerts, now_ts)
                # The sample stands for the part: count every device it held.
                inc.storm_devices += part.device_count - len(alerts)
                inc.kinds[SILENCE_KIND] += part.alert_count - len(alerts)
                inc.alert_count += part.alert_count - len(alerts)
                inc.last_seen_ts = max(inc.last_seen_ts, part.last_seen_ts)

    def _fold_silence(self, silence: Silence, now_ts: float, silent_now: bool) -> None:
        """One folded silence: into the region's open storm, else its own storm incident,
        "ingest_gap" when a sweep saw it (``silent_now``), "mass_reconnect" when screening
        folded the returns that ended it."""
        if silence.devices <= 0:
            return
        key = self._open_region_storm(SILENCE_KIND, silence.region)
        storm = silence_storm(silent_now)
        if key is None:
            key = (storm_key_group(storm, silence.group), silence.region)
        inc = self._open.get(key)
        if inc is None:
            inc = self._new_open(key, silence.group, silence.first_seen_ts, now_ts, storm)
        inc.grow_storm(
            SILENCE_KIND,
            silence.devices,
            silence.sample,
            (silence.first_seen_ts, silence.last_seen_ts),
            now_ts,
            self.config.sample_size,
        )

    def _new_open(
        self, key: tuple[str, str], group: str, first_ts: float, now_ts: float, storm: str | None
    ) -> OpenIncident:
        """Open an incident under ``key`` and link it into its region's cascade."""
        inc = OpenIncident(
            incident_id=incident_id(key[0], key[1], first_ts),
            group=group,
            region=key[1],
            devices=set(),
            sample=[],
            first_seen_ts=first_ts,
            last_seen_ts=first_ts,
            opened_ts=now_ts,
            last_alert_ts=now_ts,
            alert_count=0,
            kinds={},
            storm=storm,
        )
        self._open[key] = inc
        link_cascade(self._open.values(), inc, self.config.cascade_window_s)
        return inc

    def _fold_storm(
        self, key: tuple[str, str], kind: str, batch: list[Alert], now_ts: float
    ) -> OpenIncident:
        inc = self._open.get(key)
        if inc is None:
            first = min(a.ts for a in batch)
            inc = self._new_open(key, WHOLE_REGION, first, now_ts, key[0][1:])
        sample_size = self.config.sample_size
        inc.grow_storm(
            kind,
            len(batch),
            [a.device_id for a in batch[:sample_size]],
            (min(a.ts for a in batch), max(a.ts for a in batch)),
            now_ts,
            sample_size,
        )
        return inc

    def devices(self, incident_id: str) -> frozenset[int]:
        """Every device of an open incident: whose pending routine data to process now."""
        for inc in self._open.values():
            if inc.incident_id == incident_id:
                return frozenset(inc.devices)
        return frozenset()

    def _fold(self, key: tuple[str, str], batch: list[Alert], now_ts: float) -> None:
        inc = self._open.get(key)
        if inc is None:
            inc = self._new_open(key, key[0], batch[0].ts, now_ts, None)
        for alert in batch:
            if alert.device_id not in inc.devices:
                inc.devices.add(alert.device_id)
                if len(inc.sample) < self.config.sample_size:
                    inc.sample.append(alert.device_id)
            inc.kinds[alert.kind] = inc.kinds.get(alert.kind, 0) + 1
        if inc.first_alert is None or batch[0].ts < inc.first_alert["ts"]:
            inc.first_alert = batch[0].evidence()
        inc.alert_count += len(batch)
        inc.first_seen_ts = min(inc.first_seen_ts, batch[0].ts)
        inc.last_seen_ts = max(inc.last_seen_ts, batch[-1].ts)
        inc.last_alert_ts = now_ts
        inc.dirty = True

    def to_state(self) -> dict[str, Any]:
        """Plain primitives for msgpack; ``from_state`` restores an equal correlator."""
        return {
            "version": 1,
            "incidents": [
                inc.to_row() for inc in sorted(self._open.values(), key=lambda i: i.incident_id)
            ],
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], config: CorrelatorConfig | None = None
    ) -> Correlator:
        correlator = cls(config)
        for row in state.get("incidents", []):
            inc = OpenIncident.from_row(row)
            group = inc.group if inc.storm is None else storm_key_group(inc.storm, inc.group)
            correlator._open[(group, inc.region)] = inc
        return correlator


def storm_key_group(storm: str, group: str) -> str:
    """The key a storm incident is kept under: one per region, or one per group of it."""
    return f"*{storm}" if group == WHOLE_REGION else f"*{storm}:{group}"


def silence_storm(silent_now: bool) -> str:
    """The storm a silence folds into: seen while it lasts (a sweep) or when it ended."""
    return INGEST_GAP if silent_now else MASS_RECONNECT


def first_notice_wait_s(group: str, kinds: Mapping[str, int], config: CorrelatorConfig) -> float:
    """How long an incident (of ``group``, its alert ``kinds``) waits for its first notice:
    a silence of part of a region waits ``silence_wait_s`` for a region storm to absorb it."""
    if group != WHOLE_REGION and set(kinds) == {SILENCE_KIND}:
        return config.silence_wait_s
    return config.group_wait_s


def _pending_part_silence(inc: OpenIncident) -> bool:
    """Not yet notified, silences only, and of one group rather than the whole region."""
    return (
        inc.notified_ts is None and inc.group != WHOLE_REGION and set(inc.kinds) == {SILENCE_KIND}
    )
