"""Cascades: incidents of one region that open together, rated by their joint breadth.

Incidents of different groups in one region that open within ``cascade_window_s`` of
each other share a ``cascade_id`` (the earliest one's id), and each is as severe as
its cascade is broad: distinct devices summed over the cascade, and its groups
(``scheduler.severity``). An incident outside any cascade is rated alone.
"""

from __future__ import annotations

from collections.abc import Collection

from scheduler.incident import OpenIncident
from scheduler.severity import SeverityThresholds, severity_for


def link_cascade(
    open_incidents: Collection[OpenIncident], new: OpenIncident, window_s: float
) -> None:
    """Join ``new`` and its region's incidents opened within ``window_s`` into one cascade."""
    peers = [
        inc
        for inc in open_incidents
        if inc is not new
        and inc.region == new.region
        and abs(inc.first_seen_ts - new.first_seen_ts) <= window_s
    ]
    if not peers:
        return
    root = min(peers, key=lambda i: (i.first_seen_ts, i.incident_id))
    cascade_id = root.cascade_id or root.incident_id
    for inc in [*peers, new]:
        if inc.cascade_id is None:
            inc.cascade_id = cascade_id
            inc.dirty = True


def rate(open_incidents: Collection[OpenIncident], thresholds: SeverityThresholds) -> None:
    """Set each incident's severity from its cascade's breadth; a change marks it dirty."""
    devices: dict[str, int] = {}
    groups: dict[str, int] = {}
    for inc in open_incidents:
        if inc.cascade_id is not None:
            devices[inc.cascade_id] = devices.get(inc.cascade_id, 0) + inc.device_count
            groups[inc.cascade_id] = groups.get(inc.cascade_id, 0) + 1
    for inc in open_incidents:
        n_devices = devices.get(inc.cascade_id or "", inc.device_count)
        n_groups = groups.get(inc.cascade_id or "", 1)
        severity = severity_for(thresholds, n_devices, n_groups)
        if severity != inc.severity:
            inc.severity = severity
            inc.dirty = True
