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
#: The same columns, but ``ingest_ts`` sent once as ``ingest_ts_all`` (a float) where
#: every reading of the batch shares it, as screening copies of held readings do (their
#: copy time): a quarter of a one-metric batch's bytes, which the producer base64s and
#: JSON-wraps for the broker and writes to the in-flight ledger besides (the gateway's CPU
#: was what ran short at 2x capacity on 2 cores). Readers of version 1 only refuse it
#: by name (``unsupported wire version 2``): upgrade workers before producers.
WIRE_VERSION_SHARED_INGEST_TS = 2


def encode_batch(batch: Batch) -> dict[str, Any]:
    ingest_ts = np.ascontiguousarray(batch.ingest_ts, dtype="<f8")
    shared = ingest_ts.size > 1 and bool((ingest_ts == ingest_ts[0]).all())
    payload: dict[str, Any] = {
        "v": WIRE_VERSION_SHARED_INGEST_TS if shared else WIRE_VERSION,
        "id": batch.batch_id,
        "region": batch.region,
        "tier": batch.tier,
        "metrics": list(batch.metrics),
        "n": len(batch),
        "attempt": batch.attempt,
        "device_id": np.ascontiguousarray(batch.device_id, dtype="<u8").tobytes(),
        "ts": np.ascontiguousarray(batch.ts, dtype="<f8").tobytes(),
        "values": np.ascontiguousarray(batch.values, dtype="<f8").tobytes(),
    }
    if shared:
        payload["ingest_ts_all"] = float(ingest_ts[0])
    else:
        payload["ingest_ts"] = ingest_ts.tobytes()
    return payload


def decode_batch(payload: dict[str, Any]) -> Batch:
    """Inverse of encode_batch; raises InvalidBatch when sizes or fields disagree."""
    try:
        version = payload["v"]
        if version not in (WIRE_VERSION, WIRE_VERSION_SHARED_INGEST_TS):
            raise InvalidBatch(f"unsupported wire version {version}")
        n = int(payload["n"])
        metrics = tuple(str(m) for m in payload["metrics"])
        dev = np.frombuffer(payload["device_id"], dtype="<u8")
        ts = np.frombuffer(payload["ts"], dtype="<f8")
        vals = np.frombuffer(payload["values"], dtype="<f8").reshape(n, len(metrics))
        if version == WIRE_VERSION_SHARED_INGEST_TS:
            # Sized by the columns, not by ``n`` alone: a bad ``n`` must not allocate.
            ing = np.full(dev.shape[0], float(payload["ingest_ts_all"]), dtype="<f8")
        else:
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
