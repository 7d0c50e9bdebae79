"""Rows as ``Batcher.add`` takes them: n readings of one region and tier at time t0."""

from __future__ import annotations

import numpy as np


def rows(n: int, region: int, tier: int, t0: float = 100.0):  # type: ignore[no-untyped-def]
    return (
        np.full(n, region),
        np.full(n, tier),
        np.arange(n, dtype=np.uint64),
        np.full(n, t0),
        np.ones((n, 1)),
        np.full(n, t0),
    )
