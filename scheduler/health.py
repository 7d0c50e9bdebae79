"""Region health from heartbeats: a region silent longer than a timeout is partitioned.

Decision on regions never heard from: they count as healthy until
``startup_grace_s`` after this tracker started observing, then as partitioned.
Producers usually start before region workers send their first heartbeat;
calling every region dead at that moment would send all traffic to failover
for no reason. A region that never comes up is still caught, one grace period
later. "Started observing" is ``started_ts`` if given, else the first ``now_ts``
this object sees (the clock is passed in, so there is no other start time).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from scheduler.errors import ConfigError


class RegionHealth:
    """Last heartbeat per region and the rules that turn silence into a partition."""

    def __init__(
        self,
        silence_timeout_s: float = 5.0,
        startup_grace_s: float | None = None,
        regions: Iterable[str] = (),
        started_ts: float | None = None,
    ) -> None:
        if silence_timeout_s <= 0:
            raise ConfigError(f"silence_timeout_s must be > 0, got {silence_timeout_s}")
        self.silence_timeout_s = float(silence_timeout_s)
        # Same as the silence timeout by default: a region gets one timeout's
        # worth of chances to say hello, like any region that just went quiet.
        self.startup_grace_s = (
            self.silence_timeout_s if startup_grace_s is None else float(startup_grace_s)
        )
        self.started_ts = started_ts
        self._expected: set[str] = set(regions)
        self._last_heartbeat_ts: dict[str, float] = {}

    def _observe(self, now_ts: float) -> None:
        if self.started_ts is None:
            self.started_ts = now_ts

    def expect(self, region: str) -> None:
        """Declare a region so ``partitioned`` reports it even if it never heartbeats."""
        self._expected.add(region)

    @classmethod
    def from_heartbeats(
        cls,
        heartbeats: Mapping[str, float],
        silence_timeout_s: float = 5.0,
        regions: Iterable[str] = (),
        started_ts: float | None = None,
    ) -> RegionHealth:
        """A fresh view fed with stored heartbeats (region -> last beat, epoch seconds)."""
        health = cls(silence_timeout_s, regions=regions, started_ts=started_ts)
        for region, ts in heartbeats.items():
            health.heartbeat(region, ts)
        return health

    def heartbeat(self, region: str, now_ts: float) -> None:
        """Record that the region's workers are alive at ``now_ts``.

        Heartbeats can arrive out of order through Redis; an older one never
        moves the last-seen time backwards.
        """
        self._observe(now_ts)
        self._expected.add(region)
        previous = self._last_heartbeat_ts.get(region)
        if previous is None or now_ts > previous:
            self._last_heartbeat_ts[region] = now_ts

    def last_heartbeat_ts(self, region: str) -> float | None:
        return self._last_heartbeat_ts.get(region)

    def is_healthy(self, region: str, now_ts: float) -> bool:
        """Heard from within the silence timeout, or never heard from and still in grace."""
        self._observe(now_ts)
        last = self._last_heartbeat_ts.get(region)
        if last is None:
            assert self.started_ts is not None
            return now_ts - self.started_ts <= self.startup_grace_s
        return now_ts - last <= self.silence_timeout_s

    def healthy_mask(self, regions: tuple[str, ...], now_ts: float) -> int:
        """Bitmask with bit i set when ``regions[i]`` is healthy (the placement input)."""
        mask = 0
        for i, region in enumerate(regions):
            if self.is_healthy(region, now_ts):
                mask |= 1 << i
        return mask

    def partitioned(self, now_ts: float) -> list[str]:
        """Known regions (heard from or declared) that count as partitioned now, sorted."""
        return sorted(r for r in self._expected if not self.is_healthy(r, now_ts))

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe state, so an adapter can keep it in Redis."""
        return {
            "silence_timeout_s": self.silence_timeout_s,
            "startup_grace_s": self.startup_grace_s,
            "started_ts": self.started_ts,
            "regions": sorted(self._expected),
            "last_heartbeat_ts": dict(sorted(self._last_heartbeat_ts.items())),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> RegionHealth:
        started = state.get("started_ts")
        health = cls(
            silence_timeout_s=float(state["silence_timeout_s"]),
            startup_grace_s=float(state["startup_grace_s"]),
            regions=[str(r) for r in state.get("regions", ())],
            started_ts=None if started is None else float(started),
        )
        for region, ts in dict(state.get("last_heartbeat_ts", {})).items():
            health.heartbeat(str(region), float(ts))
        health.started_ts = None if started is None else float(started)
        return health
