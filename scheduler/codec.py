"""Columnar wire format of a micro-batch: numpy columns as raw little-endian bytes.

The payload is a plain dict of str/int/bytes, so Celery's msgpack serializer
carries it without pickle. Decoding copies nothing (``np.frombuffer``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scheduler.errors import InvalidBatch
from scheduler.model import Batch

WIRE_VERSION = 1


def encode_batch(batch: Batch) -> dict[str, Any]:
    return {
        "v": WIRE_VERSION,
        "id": batch.batch_id,
        "region": batch.region,
        "tier": batch.tier,
        "metrics": list(batch.metrics),
        "n": len(batch),
        "attempt": batch.attempt,
        "device_id": np.ascontiguousarray(batch.device_id, dtype="<u8").tobytes(),
        "ts": np.ascontiguousarray(batch.ts, dtype="<f8").tobytes(),
        "values": np.ascontiguousarray(batch.values, dtype="<f8").tobytes(),
        "ingest_ts": np.ascontiguousarray(batch.ingest_ts, dtype="<f8").tobytes(),
    }


def decode_batch(payload: dict[str, Any]) -> Batch:
    """Inverse of encode_batch; raises InvalidBatch when sizes or fields disagree."""
    try:
        if payload["v"] != WIRE_VERSION:
            raise InvalidBatch(f"unsupported wire version {payload['v']}")
        n = int(payload["n"])
        metrics = tuple(str(m) for m in payload["metrics"])
        dev = np.frombuffer(payload["device_id"], dtype="<u8")
        ts = np.frombuffer(payload["ts"], dtype="<f8")
        vals = np.frombuffer(payload["values"], dtype="<f8").reshape(n, len(metrics))
        ing = np.frombuffer(payload["ingest_ts"], dtype="<f8")
        if not (dev.shape[0] == ts.shape[0] == ing.shape[0] == n):
            raise InvalidBatch("column lengths disagree with n")
        return Batch(
            batch_id=str(payload["id"]),
            region=str(payload["region"]),
            tier=str(payload["tier"]),
            metrics=metrics,
            device_id=dev,
            ts=ts,
            values=vals,
            ingest_ts=ing,
            attempt=int(payload.get("attempt", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidBatch(f"cannot decode batch: {exc}") from exc
