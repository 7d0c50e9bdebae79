"""Read rollups back: a device's minutes, or every device of a closed minute.

Workers write each minute's rollups into one hash per writer process
(``Keys.rollup(minute, writer)``, device id → packed row) and list the writers in
``Keys.rollup_writers(minute)``; a reader merges the rows of every writer with the same
rule the writers use (``scheduler.rollup.merge_rows``), so the result does not depend
on which process happened to apply which batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from scheduler.rollup import (
    MINUTE_S,
    Rollup,
    decode_rows,
    empty_row,
    merge_rows,
    row_to_rollup,
)
from stores.keys import Keys


@dataclass(frozen=True)
class MinuteRollups:
    """Every device's rollup of one minute, merged across writers (rows are packed)."""

    minute_ts: int
    device_id: npt.NDArray[np.uint64]
    rows: npt.NDArray[np.float64]


class RollupReader:
    def __init__(self, client: redis.Redis, keys: Keys, n_metrics: int) -> None:
        self.client = client
        self.keys = keys
        self.n_metrics = n_metrics

    def minutes(self) -> list[int]:
        """Minutes that hold rollups, oldest first."""
        found = set()
        for key in self.client.scan_iter(match=self.keys.rollup_family_pattern(), count=1_000):
            minute = self.keys.rollup_minute_ts(key.decode() if isinstance(key, bytes) else key)
            if minute is not None:
                found.add(minute)
        return sorted(found)

    def device(self, device_id: int, since_ts: float, until_ts: float) -> list[tuple[int, Rollup]]:
        """(minute_ts, rollup) of one device for the minutes in [since_ts, until_ts)."""
        first = int(since_ts // MINUTE_S) * MINUTE_S
        minutes = list(range(first, int(until_ts), MINUTE_S))
        pipe = self.client.pipeline(transaction=False)
        for m in minutes:
            pipe.smembers(self.keys.rollup_writers(m))
        writer_sets: list[Any] = pipe.execute()
        wanted = [(m, w.decode()) for m, ws in zip(minutes, writer_sets, strict=True) for w in ws]
        for m, w in wanted:
            pipe.hget(self.keys.rollup(m, w), device_id)
        blobs: list[Any] = pipe.execute() if wanted else []
        merged: dict[int, npt.NDArray[np.float64]] = {}
        for (m, _w), blob in zip(wanted, blobs, strict=True):
            if blob is None:
                continue
            row = decode_rows([blob], self.n_metrics)
            merged[m] = merge_rows(merged[m], row) if m in merged else row
        return [(m, row_to_rollup(merged[m][0], self.n_metrics)) for m in sorted(merged)]

    def minute(self, minute_ts: int) -> MinuteRollups:
        """Every device's rollup of ``minute_ts``, merged across writers."""
        members: Any = self.client.smembers(self.keys.rollup_writers(minute_ts))
        writers = sorted(w.decode() for w in members)
        ids_parts: list[npt.NDArray[np.uint64]] = []
        rows_parts: list[npt.NDArray[np.float64]] = []
        for w in writers:
            raw: Any = self.client.hgetall(self.keys.rollup(minute_ts, w))
            if not raw:
                continue
            ids_parts.append(np.fromiter((int(k) for k in raw), dtype=np.uint64, count=len(raw)))
            rows_parts.append(decode_rows(list(raw.values()), self.n_metrics))
        if not ids_parts:
            width = empty_row(self.n_metrics).shape[0]
            return MinuteRollups(minute_ts, np.empty(0, np.uint64), np.empty((0, width)))
        ids = np.concatenate(ids_parts)
        rows = np.concatenate(rows_parts)
        uniq, inverse = np.unique(ids, return_inverse=True)
        merged = np.tile(empty_row(self.n_metrics), (uniq.shape[0], 1))
        # Writers are few (one per worker process): fold each writer's rows in turn.
        start = 0
        for part in ids_parts:
            idx = inverse[start : start + part.shape[0]]
            merged[idx] = merge_rows(merged[idx], rows[start : start + part.shape[0]])
            start += part.shape[0]
        return MinuteRollups(minute_ts, uniq, merged)

    def closed_minutes(
        self, now_ts: float, grace_s: float, after_ts: int | None = None
    ) -> Iterator[int]:
        """Minutes over for at least ``grace_s`` (late batches have landed), after ``after_ts``."""
        for m in self.minutes():
            if m + MINUTE_S + grace_s <= now_ts and (after_ts is None or m > after_ts):
                yield m
