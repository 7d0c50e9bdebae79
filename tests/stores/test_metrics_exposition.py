"""Given stored state, the metrics exposition names queue depth, counters, latency, heartbeats."""

from __future__ import annotations

import fakeredis
import numpy as np

from iotsched.metrics_cmd import exposition
from iotsched.status_cmd import collect
from scheduler.rollup import compute_rollups
from scheduler.settings import Settings
from stores.keys import Keys
from stores.redis_state import RedisStateStore


def test_exposition_reports_what_flower_does_not() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("m")
    store = RedisStateStore(client, keys)
    # Given two messages waiting in eu-west.standard, a processed premium batch, a heartbeat
    client.rpush(keys.broker_queue("eu-west.standard"), b"a", b"b")
    delta = compute_rollups(np.array([1], dtype=np.uint64), np.array([60.0]), np.ones((1, 1)))
    store.apply_batch("b1", "premium", delta, {"ingest": {40: 1}}, 1)
    client.hset(keys.heartbeats, "eu-west", 1000.0)
    # When the exposition is rendered at t = 1002.5
    text = exposition(collect(client, keys, Settings(), dead_letters=0), 1002.5)
    # Then each figure is there under its Prometheus name and labels
    lines = set(text.splitlines())
    assert 'iotsched_queue_depth_messages{queue="eu-west.standard"} 2' in lines
    assert 'iotsched_queue_depth_messages{queue="us-east.premium"} 0' in lines
    assert 'iotsched_events_total{name="processed",tier="premium"} 1' in lines
    assert 'iotsched_heartbeat_age_seconds{region="eu-west"} 2.500' in lines
    assert any(
        line.startswith('iotsched_latency_ms{tier="premium",quantile="0.99"}') for line in lines
    )
    assert "# TYPE iotsched_queue_depth_messages gauge" in lines
