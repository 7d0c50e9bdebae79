"""Exact reconciliation: every accepted reading is in a rollup once, or in the dead-letter
stream, or still held in the producer's outbox — counted per device and minute.

Counters can disagree with the truth after faults (a counter written, the data
it counts refused), so nothing here reads them: rollups are read back from
their hashes, dead letters decoded from the stream, held batches from the
outbox. Per (device, minute), what was found beyond what was accepted is
``duplicated``; what is missing is ``lost``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from scheduler.model import Batch
from scheduler.rollup import MINUTE_S
from stores.keys import Keys

Pairs = tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]


def _minutes(ts: npt.NDArray[np.float64]) -> npt.NDArray[np.uint64]:
    return (np.floor(ts / MINUTE_S) * MINUTE_S).astype(np.uint64)


class AcceptedLog:
    """What ingest reported accepted: (device, minute) of each reading."""

    def __init__(self) -> None:
        self._dev: list[npt.NDArray[np.uint64]] = []
        self._minute: list[npt.NDArray[np.uint64]] = []
        self.readings = 0

    def add(self, device_id: npt.ArrayLike, ts: npt.ArrayLike) -> None:
        dev = np.asarray(device_id, dtype=np.uint64)
        self._dev.append(dev)
        self._minute.append(_minutes(np.asarray(ts, dtype=np.float64)))
        self.readings += int(dev.size)

    def pairs(self) -> Pairs:
        if not self._dev:
            return np.empty(0, np.uint64), np.empty(0, np.uint64)
        return np.concatenate(self._dev), np.concatenate(self._minute)


@dataclass
class Reconciliation:
    accepted: int
    processed: int
    dead_lettered: int
    held: int
    lost: int
    duplicated: int
    #: Dead-lettered readings of the accepted stream, by reason.
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    #: Readings of dead letters left out of the stream's reconciliation (``exclude``:
    #: injected poison, or letters that carry no readings), by reason …
    excluded: dict[str, int] = field(default_factory=dict)
    #: … and how many such letters.
    excluded_letters: dict[str, int] = field(default_factory=dict)


def rollup_counts(client: Any, keys: Keys) -> tuple[Pairs, npt.NDArray[np.float64]]:
    """(device, minute) pairs and the readings counted in their rollups, every writer summed."""
    devs: list[int] = []
    mins: list[int] = []
    counts: list[float] = []
    for raw_key in client.scan_iter(match=keys.rollup_pattern(), count=1_000):
        minute = keys.rollup_minute_ts(raw_key.decode())
        if minute is None:
            continue
        for dev, blob in client.hgetall(raw_key).items():
            devs.append(int(dev))
            mins.append(minute)
            counts.append(float(np.frombuffer(blob[:8], dtype="<f8")[0]))
    pairs = (np.asarray(devs, dtype=np.uint64), np.asarray(mins, dtype=np.uint64))
    return pairs, np.asarray(counts, dtype=np.float64)


def dead_letter_columns(
    client: Any, keys: Keys, exclude: Callable[[str], bool] = lambda batch_id: False
) -> tuple[Pairs, Counter[str], Counter[str], Counter[str]]:
    """The (device, minute) of every reading in the dead-letter stream; readings by reason,
    and by reason for letters of batches ``exclude`` names (injected poison)."""
    devs: list[npt.NDArray[np.uint64]] = []
    mins: list[npt.NDArray[np.uint64]] = []
    reasons: Counter[str] = Counter()
    excluded: Counter[str] = Counter()
    letters: Counter[str] = Counter()
    for _id, f in client.xrange(keys.dead_letters):
        reason = f[b"reason"].decode()
        readings = int(f.get(b"readings", 1))
        dev, ts, batch_id = _letter_columns(f[b"source"].decode(), f[b"payload"])
        if dev is None or ts is None or (batch_id is not None and exclude(batch_id)):
            excluded[reason] += readings
            letters[reason] += 1
            continue
        devs.append(dev)
        mins.append(_minutes(ts))
        reasons[reason] += int(dev.size)
    if not devs:
        return (np.empty(0, np.uint64), np.empty(0, np.uint64)), reasons, excluded, letters
    return (np.concatenate(devs), np.concatenate(mins)), reasons, excluded, letters


def _letter_columns(
    source: str, payload: bytes
) -> tuple[npt.NDArray[np.uint64] | None, npt.NDArray[np.float64] | None, str | None]:
    try:
        if source == "ingest":
            d = json.loads(payload)
            return np.asarray([d["device_id"]], np.uint64), np.asarray([d["ts"]], float), None
        body = msgpack.unpackb(payload, raw=False)
        dev = np.frombuffer(body["device_id"], dtype="<u8").astype(np.uint64)
        ts = np.frombuffer(body["ts"], dtype="<f8")
        return (dev, ts, str(body.get("id"))) if dev.size == ts.size else (None, None, None)
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        return None, None, None


def _pair_keys(dev: npt.NDArray[np.uint64], minute: npt.NDArray[np.uint64]) -> npt.NDArray[Any]:
    """One sortable key per (device, minute): a packed uint64 when both fit (fast at
    10M readings), else the pairs as rows."""
    first = int(minute.min())
    span = (minute - np.uint64(first)) // np.uint64(MINUTE_S)
    if int(dev.max()) < 1 << 44 and int(span.max()) < 1 << 20:
        return (dev << np.uint64(20)) | span
    return np.stack((dev, minute), axis=1)


def reconcile(
    accepted: AcceptedLog,
    client: Any,
    keys: Keys,
    held: list[Batch] | None = None,
    exclude: Callable[[str], bool] = lambda batch_id: False,
) -> Reconciliation:
    exp_dev, exp_min = accepted.pairs()
    (r_dev, r_min), r_count = rollup_counts(client, keys)
    (d_dev, d_min), reasons, excluded, letters = dead_letter_columns(client, keys, exclude)
    held = held or []
    h_dev = np.concatenate([b.device_id for b in held]) if held else np.empty(0, np.uint64)
    h_min = _minutes(np.concatenate([b.ts for b in held])) if held else np.empty(0, np.uint64)
    dev = np.concatenate((exp_dev, r_dev, d_dev, h_dev.astype(np.uint64)))
    minute = np.concatenate((exp_min, r_min, d_min, h_min))
    weight = np.concatenate(
        (
            np.ones(exp_dev.size),
            -r_count,
            -np.ones(d_dev.size),
            -np.ones(h_dev.size),
        )
    )
    if dev.size == 0:
        return Reconciliation(0, 0, 0, 0, 0, 0)
    _, inverse = np.unique(_pair_keys(dev, minute), axis=0, return_inverse=True)
    balance = np.bincount(inverse.ravel(), weights=weight)
    return Reconciliation(
        accepted=accepted.readings,
        processed=int(r_count.sum()),
        dead_lettered=int(d_dev.size),
        held=int(h_dev.size),
        lost=int(balance[balance > 0].sum()),
        duplicated=int(-balance[balance < 0].sum()),
        dead_letter_reasons=dict(reasons),
        excluded=dict(excluded),
        excluded_letters=dict(letters),
    )
