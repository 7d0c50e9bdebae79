"""AlertmanagerSink: incidents as Prometheus Alertmanager alerts (``POST /api/v2/alerts``).

An incident is one alert, identified by its labels (alertname, incident_id, region,
group, severity, kind). Alertmanager forgets an alert whose ``endsAt`` passes, so a
firing incident is posted with ``endsAt`` ``hold_s`` ahead and re-posted while it fires:
on every emit, each incident this sink saw firing and has not posted for ``repost_s`` is
posted again, and ``repost`` lets a periodic caller (``iotsched incidents
--alertmanager-url``) do the same from the stored open incidents after a restart. A
resolution is posted with ``endsAt`` = when it resolved, which closes the alert at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from alerts.webhook_sink import WebhookSink

ALERTNAME = "IotschedIncident"
#: A firing alert stays active this long without being posted again.
HOLD_S = 15 * 60.0
#: Firing alerts are re-posted at least this often.
REPOST_S = 60.0
#: Sample device ids shown in the annotation.
SAMPLE_DEVICES = 10


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _kind(doc: dict[str, Any]) -> str:
    kinds: dict[str, int] = doc.get("kinds") or {}
    return max(sorted(kinds), key=lambda k: kinds[k]) if kinds else "unknown"


def alertmanager_alert(
    doc: dict[str, Any], now_ts: float, hold_s: float = HOLD_S
) -> dict[str, Any]:
    """One incident document (``alerts.document``) as an Alertmanager v2 alert."""
    resolved = doc["status"] == "resolved"
    sample = doc.get("sample_device_ids") or []
    return {
        "labels": {
            "alertname": ALERTNAME,
            "incident_id": doc["incident_id"],
            "region": doc["region"],
            "group": str(doc["group"]),
            "severity": doc.get("severity") or "info",
            "kind": _kind(doc),
        },
        "annotations": {
            "summary": f"{doc['device_count']} devices of group {doc['group']} in "
            f"{doc['region']}: {_kind(doc)}",
            "device_count": str(doc["device_count"]),
            "sample": ",".join(str(d) for d in sample[:SAMPLE_DEVICES]),
            "first_seen": _iso(doc["first_seen_ts"]),
        },
        "startsAt": _iso(doc["first_seen_ts"]),
        "endsAt": _iso(doc.get("at_ts", now_ts) if resolved else now_ts + hold_s),
    }


class _Poster(WebhookSink):
    """The webhook's delivery (timeout, retries of 429/5xx and network errors with
    backoff, one-line errors) for a body that is a list of alerts, not one document."""

    def post_body(self, body: bytes) -> None:
        self._post(body)


class AlertmanagerSink:
    name = "alertmanager"

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 2.0,
        attempts: int = 3,
        hold_s: float = HOLD_S,
        repost_s: float = REPOST_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = base_url.rstrip("/") + "/api/v2/alerts"
        self._poster = _Poster(self.url, timeout_s=timeout_s, attempts=attempts)
        self.hold_s = hold_s
        self.repost_s = repost_s
        self.clock = clock
        self._lock = threading.Lock()
        #: incident id → (its latest firing document, when it was last posted)
        self._firing: dict[str, tuple[dict[str, Any], float]] = {}

    def emit(self, documents: Sequence[dict[str, Any]]) -> None:
        now = self.clock()
        with self._lock:
            for doc in documents:
                if doc["status"] == "resolved":
                    self._firing.pop(doc["incident_id"], None)
                else:
                    self._firing[doc["incident_id"]] = (doc, now)
            fresh = {d["incident_id"] for d in documents}
            due = [
                d
                for inc_id, (d, posted) in self._firing.items()
                if inc_id not in fresh and now - posted >= self.repost_s
            ]
            for d in due:
                self._firing[d["incident_id"]] = (d, now)
        self.post([*documents, *due], now)

    def repost(self, open_documents: Sequence[dict[str, Any]]) -> None:
        """Post these firing incidents again (a periodic caller's keep-alive)."""
        self.post(open_documents, self.clock())

    def post(self, documents: Sequence[dict[str, Any]], now_ts: float) -> None:
        if not documents:
            return
        alerts = [alertmanager_alert(d, now_ts, self.hold_s) for d in documents]
        self._poster.post_body(json.dumps(alerts).encode())
