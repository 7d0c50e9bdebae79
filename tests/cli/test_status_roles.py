"""``iotsched status`` shows each region's heartbeats per role."""

from __future__ import annotations

import fakeredis

from iotsched.status_cmd import collect, heartbeat_lines
from scheduler.settings import Settings
from stores.health_store import HealthStore
from stores.keys import Keys
from workers.heartbeat import Heartbeater, lanes_served, regions_served
from workers.profiles import region_queues

NOW = 1_700_000_000.0
REGIONS = ("eu-west", "us-east")


def test_status_shows_a_dead_data_worker_beside_a_live_premium_lane() -> None:
    client, keys = fakeredis.FakeRedis(), Keys("t")
    settings = Settings(redis_url="memory://", key_prefix="t", regions=REGIONS)
    # Given eu-west's data worker last beat 30 s ago, its premium lane beating now, and
    # us-east never heard from
    for role, ts in (("data", NOW - 30), ("premium", NOW)):
        queues = region_queues("eu-west", role)
        store = HealthStore(client, keys, REGIONS)
        Heartbeater(store, regions_served(queues), clock=lambda ts=ts: ts,
                    lanes=lanes_served(queues)).beat_once()  # fmt: skip
    # When status is collected and printed
    out = collect(client, keys, settings, dead_letters=0)
    lines = heartbeat_lines(out, REGIONS, NOW)
    # Then each role shows its own age
    assert out["heartbeats"] == {"eu-west": NOW - 30}
    assert out["lane_heartbeats"] == {"eu-west": NOW}
    assert lines[0].split() == ["eu-west", "data", "30.0", "s", "ago", "premium", "lane", "0.0",
                                "s", "ago"]  # fmt: skip
    assert lines[1].split() == ["us-east", "data", "never", "premium", "lane", "never"]
