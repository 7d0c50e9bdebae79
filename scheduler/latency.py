"""Latency histograms with log-spaced buckets: mergeable counts, percentiles within 5 %.

Workers add bucket counts (one HINCRBY per non-empty bucket per batch); any
reader merges them and reads p50/p99 without keeping individual samples.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

BASE_MS = 0.1
GROWTH = 1.05
N_BUCKETS = 400  # 0.1 ms … about 3e7 ms (8 h); later values land in the last bucket
_LOG_GROWTH = float(np.log(GROWTH))


def bucket_of(latency_ms: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    safe = np.maximum(latency_ms, BASE_MS)
    idx = np.floor(np.log(safe / BASE_MS) / _LOG_GROWTH).astype(np.int64)
    return np.clip(idx, 0, N_BUCKETS - 1)


def upper_edge_ms(bucket: int) -> float:
    return float(BASE_MS * GROWTH ** (bucket + 1))


def bucket_counts(latency_ms: npt.NDArray[np.float64]) -> dict[int, int]:
    """Non-empty buckets of a sample, ready to add to a stored histogram."""
    if latency_ms.size == 0:
        return {}
    b, c = np.unique(bucket_of(latency_ms), return_counts=True)
    return {int(k): int(v) for k, v in zip(b, c, strict=True)}


def percentile_ms(counts: Mapping[int, int], q: float) -> float | None:
    """The q-th percentile (0-100) as the upper edge of its bucket; None when empty."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = q / 100.0 * total
    seen = 0
    for b in sorted(counts):
        seen += counts[b]
        if seen >= rank:
            return upper_edge_ms(b)
    return upper_edge_ms(max(counts))


def merge_counts(*hists: Mapping[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in hists:
        for b, c in h.items():
            out[b] = out.get(b, 0) + c
    return out


def counts_since(after: Mapping[int, int], before: Mapping[int, int]) -> dict[int, int]:
    """What a cumulative histogram recorded between two reads of it (``before``, then ``after``)."""
    return {b: c - before.get(b, 0) for b, c in after.items() if c > before.get(b, 0)}
