"""Incidents read back: every incident notified (from the alert stream, newest document
per incident) joined with the correlator's open state (every device of an open one)."""

from __future__ import annotations

from typing import Any

import msgpack
import redis

from alerts.stream_sink import read_alerts
from stores.keys import Keys

#: Alert stream entries read, newest first (the stream itself is trimmed to 100,000).
MAX_DOCUMENTS = 100_000


def open_incidents(
    client: redis.Redis, keys: Keys, regions: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """incident id → the correlator's row (every device) of each incident held open."""
    out: dict[str, dict[str, Any]] = {}
    for region in regions:
        raw: Any = client.get(keys.incidents(region))
        if raw is None:
            continue
        state = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        for row in state.get("incidents", []):
            out[row["incident_id"]] = row
    return out


def incidents(
    client: redis.Redis, keys: Keys, regions: tuple[str, ...], open_only: bool = False
) -> list[dict[str, Any]]:
    """Latest notification of each incident, oldest first seen first, with ``open`` and
    ``device_ids`` (every device while open; the notified sample once resolved)."""
    latest: dict[str, dict[str, Any]] = {}
    for doc in read_alerts(client, keys, count=MAX_DOCUMENTS):
        latest[doc["incident_id"]] = doc
    held = open_incidents(client, keys, regions)
    for inc_id, row in held.items():
        if inc_id not in latest:  # open, not notified yet (still inside its group wait)
            latest[inc_id] = _pending(row)
    out = []
    for inc_id, doc in latest.items():
        is_open = inc_id in held and doc["status"] != "resolved"
        if open_only and not is_open:
            continue
        device_ids = sorted(held[inc_id]["devices"]) if is_open else doc["sample_device_ids"]
        out.append({**doc, "open": is_open, "device_ids": device_ids})
    return sorted(out, key=lambda d: (d["first_seen_ts"], d["incident_id"]))


def _pending(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "incident_id": row["incident_id"],
        "status": "pending",
        "group": row["group"],
        "region": row["region"],
        "device_count": len(row["devices"]),
        "sample_device_ids": list(row["sample"]),
        "first_seen_ts": row["first_seen_ts"],
        "last_seen_ts": row["last_seen_ts"],
        "alert_count": row["alert_count"],
        "kinds": dict(row["kinds"]),
    }
