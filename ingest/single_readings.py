"""Single readings (dicts or JSON bytes/str, as devices send them) as typed columns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ingest.rejections import raw_bytes
from scheduler.errors import InvalidReading
from scheduler.model import DeadLetter
from scheduler.validation import Limits, parse_reading

Reading = Mapping[str, object] | bytes | str


@dataclass(frozen=True)
class Singles:
    device_id: npt.NDArray[np.uint64]
    ts: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    #: Index of each parsed row among the readings given.
    parsed_from: npt.NDArray[np.intp]
    #: The bytes each parsed row arrived as (a row rejected later is dead-lettered with them).
    payloads: list[bytes]
    #: Readings that did not parse, with their reason.
    letters: list[DeadLetter]


def parse_singles(readings: Iterable[Reading], limits: Limits, now: float) -> Singles:
    ids: list[int] = []
    tss: list[float] = []
    vals: list[tuple[float, ...]] = []
    parsed_from: list[int] = []
    raws: list[bytes] = []
    letters: list[DeadLetter] = []
    for i, raw in enumerate(readings):
        try:
            d, t, v = parse_reading(raw, limits, now)
        except InvalidReading as exc:
            letters.append(DeadLetter(exc.reason, exc.detail, raw_bytes(raw), "ingest", now))
            continue
        ids.append(d)
        tss.append(t)
        vals.append(v)
        parsed_from.append(i)
        raws.append(raw_bytes(raw))
    return Singles(
        np.asarray(ids, dtype=np.uint64),
        np.asarray(tss, dtype=np.float64),
        np.asarray(vals, dtype=np.float64).reshape(len(ids), len(limits.metrics)),
        np.asarray(parsed_from, dtype=np.intp),
        raws,
        letters,
    )


def as_columns(
    device_id: npt.ArrayLike, ts: npt.ArrayLike, values: npt.ArrayLike, limits: Limits
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Readings as typed columns; one metric's values may come as a flat column."""
    dev = np.asarray(device_id, dtype=np.uint64)
    t = np.asarray(ts, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1 and len(limits.metrics) == 1:
        v = v[:, None]
    return dev, t, v
