"""The incident: what many alerts fold into, as notified (``Incident``) and as kept open.

``Incident`` is the frozen snapshot the sinks receive inside an ``IncidentUpdate``;
``OpenIncident`` is the correlator's mutable record of one open incident, with its row
of plain primitives so an adapter can keep it in Redis with msgpack.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.severity import Severity


@dataclass(frozen=True)
class Incident:
    """A snapshot of an incident as notified."""

    incident_id: str
    group: str
    region: str
    device_count: int
    sample_device_ids: tuple[int, ...]
    first_seen_ts: float
    last_seen_ts: float
    severity: Severity
    cascade_id: str | None
    alert_count: int
    kinds: tuple[tuple[str, int], ...]
    #: The first device alert of the incident, as ``Alert.evidence`` gives it.
    first_alert: dict[str, Any] | None = None
    #: "ingest_gap" or "mass_reconnect" for a folded silence storm; None otherwise.
    storm: str | None = None


@dataclass(frozen=True)
class IncidentUpdate:
    """A notification: ``status`` is "firing" (first), "updated" or "resolved"."""

    status: str
    incident: Incident
    at_ts: float


def incident_id(group: str, region: str, first_seen_ts: float) -> str:
    """Deterministic: the same alerts replayed give the same id."""
    key = f"{region}\x1f{group}\x1f{first_seen_ts!r}".encode()
    return hashlib.sha1(key, usedforsecurity=False).hexdigest()[:16]


@dataclass
class OpenIncident:
    """One open incident as the correlator grows it; ``snapshot`` is what is notified."""

    incident_id: str
    group: str
    region: str
    devices: set[int]
    sample: list[int]
    first_seen_ts: float
    last_seen_ts: float
    opened_ts: float
    last_alert_ts: float
    alert_count: int
    kinds: dict[str, int]
    cascade_id: str | None = None
    notified_ts: float | None = None
    notified_severity: int = -1
    dirty: bool = True
    severity: int = 0
    first_alert: dict[str, Any] | None = None
    storm: str | None = None
    #: Devices of a storm incident (which keeps no device set), counted once per alert.
    storm_devices: int = 0

    @property
    def device_count(self) -> int:
        return self.storm_devices if self.storm is not None else len(self.devices)

    def grow_storm(
        self,
        kind: str,
        devices: int,
        sample: Sequence[int],
        seen_ts: tuple[float, float],
        now_ts: float,
        sample_size: int,
    ) -> None:
        """Count ``devices`` more of a storm (which keeps no device set), seen over
        ``seen_ts`` (first, last), and keep the first of ``sample`` while there is room."""
        room = sample_size - len(self.sample)
        if room > 0:
            self.sample.extend(sample[:room])
        self.storm_devices += devices
        self.kinds[kind] = self.kinds.get(kind, 0) + devices
        self.alert_count += devices
        self.first_seen_ts = min(self.first_seen_ts, seen_ts[0])
        self.last_seen_ts = max(self.last_seen_ts, seen_ts[1])
        self.last_alert_ts = now_ts
        self.dirty = True

    def snapshot(self) -> Incident:
        return Incident(
            incident_id=self.incident_id,
            group=self.group,
            region=self.region,
            device_count=self.device_count,
            sample_device_ids=tuple(self.sample),
            first_seen_ts=self.first_seen_ts,
            last_seen_ts=self.last_seen_ts,
            severity=Severity(self.severity),
            cascade_id=self.cascade_id,
            alert_count=self.alert_count,
            kinds=tuple(sorted(self.kinds.items())),
            first_alert=dict(self.first_alert) if self.first_alert else None,
            storm=self.storm,
        )

    def to_row(self) -> dict[str, Any]:
        """Plain primitives for msgpack; ``from_row`` restores an equal record."""
        return {
            "incident_id": self.incident_id,
            "group": self.group,
            "region": self.region,
            "devices": sorted(self.devices),
            "sample": list(self.sample),
            "first_seen_ts": self.first_seen_ts,
            "last_seen_ts": self.last_seen_ts,
            "opened_ts": self.opened_ts,
            "last_alert_ts": self.last_alert_ts,
            "alert_count": self.alert_count,
            "kinds": dict(self.kinds),
            "cascade_id": self.cascade_id,
            "notified_ts": self.notified_ts,
            "notified_severity": self.notified_severity,
            "dirty": self.dirty,
            "severity": self.severity,
            "first_alert": self.first_alert,
            "storm": self.storm,
            "storm_devices": self.storm_devices,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> OpenIncident:
        fields = dict(row)
        fields["devices"] = set(fields["devices"])
        return cls(**fields)
