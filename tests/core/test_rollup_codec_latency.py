"""Given a batch, rollups, the wire format and latency histograms keep the numbers exact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.codec import decode_batch, encode_batch
from scheduler.errors import InvalidBatch
from scheduler.latency import bucket_counts, merge_counts, percentile_ms
from scheduler.model import Batch
from scheduler.rollup import (
    compute_rollups,
    decode_rows,
    delta_row,
    delta_rows,
    encode_rows,
    merge,
    merge_rows,
    row_to_rollup,
)


def test_rollups_group_by_device_and_minute_with_last_by_time() -> None:
    dev = np.array([1, 1, 1, 2], dtype=np.uint64)
    ts = np.array([125.0, 61.0, 100.0, 61.0])
    val = np.array([[5.0], [1.0], [3.0], [9.0]])
    d = compute_rollups(dev, ts, val)
    got = {(int(d.device_id[i]), int(d.minute_ts[i])): delta_row(d, i) for i in range(len(d))}
    r = got[(1, 60)]
    assert (r.count, r.sum, r.min, r.max, r.last, r.last_ts) == (
        2,
        (4.0,),
        (1.0,),
        (3.0,),
        (3.0,),
        100.0,
    )
    assert got[(1, 120)].count == 1
    assert got[(2, 60)].last == (9.0,)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.floats(0, 500), st.floats(-1e3, 1e3)), min_size=1))
def test_split_batches_merged_equal_one_batch(rows: list[tuple[int, float, float]]) -> None:
    dev = np.array([r[0] for r in rows], dtype=np.uint64)
    ts = np.array([r[1] for r in rows])
    val = np.array([[r[2]] for r in rows])
    whole = compute_rollups(dev, ts, val)
    cut = len(rows) // 2
    parts = [
        compute_rollups(dev[:cut], ts[:cut], val[:cut]),
        compute_rollups(dev[cut:], ts[cut:], val[cut:]),
    ]
    merged: dict[tuple[int, int], object] = {}
    for p in parts:
        for i in range(len(p)):
            k = (int(p.device_id[i]), int(p.minute_ts[i]))
            merged[k] = merge(merged.get(k), delta_row(p, i))  # type: ignore[arg-type]
    for i in range(len(whole)):
        k = (int(whole.device_id[i]), int(whole.minute_ts[i]))
        want, got = delta_row(whole, i), merged[k]
        assert got.count == want.count and got.min == want.min and got.max == want.max
        assert got.sum[0] == pytest.approx(want.sum[0], abs=1e-6)


def test_packed_rows_merge_like_rollups_and_survive_bytes() -> None:
    d = compute_rollups(
        np.array([1, 2, 1], dtype=np.uint64),
        np.array([1.0, 2.0, 3.0]),
        np.array([[1.0], [2.0], [3.0]]),
    )
    sel = np.arange(len(d))
    first = merge_rows(decode_rows([None] * len(d), 1), delta_rows(d, sel))
    again = merge_rows(decode_rows(encode_rows(first), 1), delta_rows(d, sel))
    for i in range(len(d)):
        once = delta_row(d, i)
        assert row_to_rollup(first[i], 1) == once
        assert row_to_rollup(again[i], 1) == merge(once, once)


def test_wire_format_round_trips_and_rejects_garbage() -> None:
    b = Batch(
        "x:1",
        "eu-west",
        "premium",
        ("a", "b"),
        np.arange(3, dtype=np.uint64),
        np.array([1.0, 2, 3]),
        np.arange(6.0).reshape(3, 2),
        np.array([4.0, 5, 6]),
    )
    back = decode_batch(encode_batch(b))
    assert (back.batch_id, back.region, back.tier, back.metrics) == (
        "x:1",
        "eu-west",
        "premium",
        ("a", "b"),
    )
    assert np.array_equal(back.values, b.values) and np.array_equal(back.device_id, b.device_id)
    bad = encode_batch(b)
    bad["n"] = 4
    with pytest.raises(InvalidBatch):
        decode_batch(bad)
    with pytest.raises(InvalidBatch):
        decode_batch({"v": 1})


def test_a_batch_whose_readings_share_an_ingest_time_sends_it_once() -> None:
    # Given a screening copy: every reading copied at the same instant
    ids = np.arange(1000, dtype=np.uint64)
    ts = np.arange(1000.0)
    copy = Batch("c:1", "eu-west", "standard", ("a",), ids, ts, ts[:, None], np.full(1000, 7.5))
    # When it is encoded
    payload = encode_batch(copy)
    # Then the instant goes once, not as a column, and comes back as one
    assert "ingest_ts" not in payload and payload["ingest_ts_all"] == 7.5
    back = decode_batch(payload)
    assert np.array_equal(back.ingest_ts, copy.ingest_ts) and np.array_equal(back.ts, ts)
    # And a batch of different instants keeps its column, as before
    varied = Batch("c:2", "eu-west", "standard", ("a",), ids, ts, ts[:, None], ts + 0.5)
    assert decode_batch(encode_batch(varied)).ingest_ts.tolist() == (ts + 0.5).tolist()
    assert encode_batch(varied)["v"] == 1
    # And a count its columns do not hold is refused, not allocated
    payload["n"] = 10**12
    with pytest.raises(InvalidBatch):
        decode_batch(payload)


def test_latency_percentiles_are_within_five_percent() -> None:
    rng = np.random.default_rng(0)
    sample = rng.lognormal(3, 1, 100_000)
    h = merge_counts(bucket_counts(sample[:50_000]), bucket_counts(sample[50_000:]))
    for q in (50, 99):
        exact = float(np.percentile(sample, q))
        assert exact <= percentile_ms(h, q) <= exact * 1.051  # type: ignore[operator]
    assert percentile_ms({}, 99) is None
