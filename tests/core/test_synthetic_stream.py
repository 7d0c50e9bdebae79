"""The bench's synthetic stream: a gateway's chunks, in the order readings came."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.synthetic import CHUNK_SPAN_S, SyntheticStream
from scheduler.registry import generate_registry

REGISTRY = generate_registry(500, seed=1)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 3_000), seed=st.integers(0, 2**31))
def test_a_chunk_carries_event_times_in_order_within_its_span(n: int, seed: int) -> None:
    # Given a stream, when it hands over a chunk at now
    now = 1_764_547_200.0  # an epoch instant: event times are seconds since 1970
    ids, ts, values = SyntheticStream(REGISTRY, seed=seed).chunk(n, now)
    # Then its event times never fall along the chunk, and lie in the span before now
    assert np.all(np.diff(ts) >= 0)
    assert now - CHUNK_SPAN_S <= ts.min() and ts.max() <= now
    # And each of its readings belongs to a known device
    assert ids.shape == ts.shape == values.shape[:1]
    assert np.isin(ids, REGISTRY.device_id).all()


def test_chunks_are_reproducible_from_the_seed() -> None:
    a = SyntheticStream(REGISTRY, seed=7).chunk(1_000, 50.0)
    b = SyntheticStream(REGISTRY, seed=7).chunk(1_000, 50.0)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
