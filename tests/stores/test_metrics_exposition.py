"""Given stored state, the metrics exposition names queue depth, counters, latency, slots."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess

import fakeredis
import numpy as np
import pytest

from iotsched.metrics_cmd import snapshot
from iotsched.metrics_exposition import exposition
from scheduler.latency import bucket_counts
from scheduler.model import DeadLetter
from scheduler.rollup import compute_rollups
from scheduler.settings import Settings
from stores.keys import Keys
from stores.redis_state import RedisStateStore


def _stored_state() -> tuple[fakeredis.FakeRedis, Keys]:
    client = fakeredis.FakeRedis()
    keys = Keys("m")
    store = RedisStateStore(client, keys)
    # Two messages waiting in eu-west.standard
    client.rpush(keys.broker_queue("eu-west.standard"), b"a", b"b")
    # One premium reading applied 40 ms and one 3 s after its offer
    delta = compute_rollups(
        np.array([1, 2], dtype=np.uint64), np.array([60.0, 61.0]), np.ones((2, 1))
    )
    hist = bucket_counts(np.array([40.0, 3_000.0]))
    store.apply_batch("b1", "premium", delta, {"ingest": hist}, 2)
    client.hset(keys.heartbeats, "eu-west", 1000.0)
    client.hset(keys.lane_heartbeats, "eu-west", 1001.5)
    store.incr_counters({"pushed_back": 7, "ingested": 12})
    store.add_dead_letters(
        [
            DeadLetter("unknown_device", "device 9 not in registry", b"{}", "ingest", 999.0),
            DeadLetter("malformed", "bad json", b"{", "ingest", 999.0),
        ]
    )
    beat = {"region": "eu-west", "slots": 3, "busy": 2, "busy_s": 1.0, "finished": 5, "held": 2}
    beat |= {"max_slots": 4, "min_slots": 1, "target_slots": 3, "region_slots": 3}
    beat |= {"service_rps": 10.0, "consuming": True, "at_ts": 1001.0}
    client.hset(keys.scaling_pools, "data-eu-west@h1", json.dumps(beat))
    return client, keys


def test_exposition_uses_prometheus_names_units_and_histograms() -> None:
    client, keys = _stored_state()
    # When the exposition is rendered at t = 1002.5
    text = exposition(snapshot(client, keys, Settings(), 1002.5))
    lines = set(text.splitlines())
    # Then queue depth is under Celery exporters' name and iotsched's own
    assert 'celery_queue_length{queue_name="eu-west.standard"} 2' in lines
    assert 'iotsched_queue_depth_messages{queue="us-east.premium"} 0' in lines
    # And counters are one family per thing, with _total
    assert 'iotsched_processed_readings_total{tier="premium"} 2' in lines
    assert "iotsched_pushed_back_readings_total 7" in lines
    assert 'iotsched_dead_lettered_readings_total{reason="unknown_device"} 1' in lines
    assert 'iotsched_dead_lettered_readings_total{reason="malformed"} 1' in lines
    # And latency is a cumulative histogram in seconds: 1 reading by 50 ms, both by 5 s
    assert 'iotsched_processing_latency_seconds_bucket{tier="premium",le="0.05"} 1' in lines
    assert 'iotsched_processing_latency_seconds_bucket{tier="premium",le="2.5"} 1' in lines
    assert 'iotsched_processing_latency_seconds_bucket{tier="premium",le="5"} 2' in lines
    assert 'iotsched_processing_latency_seconds_count{tier="premium"} 2' in lines
    assert "# TYPE iotsched_detection_latency_seconds histogram" in lines
    # And heartbeats, slots per region and class, reservations
    assert 'iotsched_heartbeat_age_seconds{region="eu-west",role="data"} 2.5' in lines
    assert 'iotsched_heartbeat_age_seconds{region="eu-west",role="premium"} 1' in lines
    assert 'iotsched_slots_granted{region="eu-west",work_class="data"} 3' in lines
    assert 'iotsched_slots_used{region="eu-west",work_class="data"} 2' in lines
    assert 'iotsched_reservations_active{region="eu-west"} 0' in lines
    # And no abbreviated units or quantile gauges remain
    assert "_ms" not in text and "quantile=" not in text


def test_stale_pool_heartbeats_grant_no_slots() -> None:
    client, keys = _stored_state()
    text = exposition(snapshot(client, keys, Settings(), 1_000_000.0))
    assert "iotsched_slots_granted{" not in text


def test_promtool_accepts_the_exposition() -> None:
    if shutil.which("promtool") is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required under CI (.ci/run installs Debian's prometheus)")
        pytest.skip("promtool (Debian: prometheus) is not installed")
    client, keys = _stored_state()
    text = exposition(snapshot(client, keys, Settings(), 1002.5))
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


#: Fed by the autoscaler (issue 16), not by this exporter's stored state.
_EXPORTED_ELSEWHERE = {"iotsched_autoscaler_desired_replicas"}


def test_grafana_dashboard_queries_only_exposed_names() -> None:
    dashboard = json.loads(
        (pathlib.Path(__file__).parents[2] / "deploy" / "grafana" / "iotsched.json").read_text()
    )
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queried = {m for e in exprs for m in re.findall(r"\b(?:iotsched|celery)_[a-z_]+", e)}
    client, keys = _stored_state()
    text = exposition(snapshot(client, keys, Settings(), 1002.5))
    declared = set(re.findall(r"^# TYPE (\S+) histogram", text, re.M))
    exposed = set(re.findall(r"^# TYPE (\S+)", text, re.M)) | {f"{h}_bucket" for h in declared}
    assert queried - _EXPORTED_ELSEWHERE <= exposed, queried - exposed
