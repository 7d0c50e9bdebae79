"""The alert document every sink sends, and the sink interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from scheduler.incident import IncidentUpdate


class AlertSink(Protocol):
    name: str

    def emit(self, documents: Sequence[dict[str, Any]]) -> None:
        """Deliver notifications, in order; raises when they could not be delivered."""


def detection_latency_ms(update: IncidentUpdate) -> float | None:
    """How late this notification is relative to the evidence it reports.

    A first notice ("firing") measures from the incident's first anomalous reading,
    which is the latency to page; an update from its newest one; a resolution has none.
    """
    inc = update.incident
    if update.status == "firing":
        return round((update.at_ts - inc.first_seen_ts) * 1000.0, 1)
    if update.status == "updated":
        return round((update.at_ts - inc.last_seen_ts) * 1000.0, 1)
    return None


def alert_document(update: IncidentUpdate) -> dict[str, Any]:
    """JSON-ready fields of one incident notification."""
    inc = update.incident
    return {
        "incident_id": inc.incident_id,
        "status": update.status,
        "severity": inc.severity.name.lower(),
        "group": inc.group,
        "region": inc.region,
        "device_count": inc.device_count,
        "sample_device_ids": list(inc.sample_device_ids),
        "first_seen_ts": inc.first_seen_ts,
        "last_seen_ts": inc.last_seen_ts,
        "cascade_id": inc.cascade_id,
        "alert_count": inc.alert_count,
        "kinds": dict(inc.kinds),
        "storm": inc.storm,
        "at_ts": update.at_ts,
        "detection_latency_ms": detection_latency_ms(update),
        # The first device alert: its kind, the observed value, expected value and band, score.
        "first_alert": dict(inc.first_alert) if inc.first_alert else None,
    }
