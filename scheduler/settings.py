"""Runtime settings, read once from the environment (``IOTSCHED_*``) into one object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from scheduler.errors import ConfigError
from scheduler.model import DEFAULT_REGIONS, DEFAULT_TIERS, Topology


def _csv(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


@dataclass(frozen=True)
class Settings:
    #: Redis for shared state; also the broker unless ``broker_url`` says otherwise.
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = ""
    #: Every key (state and broker) lives under this prefix.
    key_prefix: str = "iotsched"
    regions: tuple[str, ...] = DEFAULT_REGIONS
    tiers: tuple[str, ...] = DEFAULT_TIERS
    metrics: tuple[str, ...] = ("value",)
    #: Per-region broker URLs (``IOTSCHED_BROKER_URL_<REGION>``); default: the shared broker.
    region_broker_urls: Mapping[str, str] = field(default_factory=dict)
    #: A message unacked this long is delivered again (kombu visibility timeout).
    visibility_timeout_s: int = 300
    #: How often a worker sweeps for messages abandoned by a dead worker.
    unacked_restore_interval_s: int = 5
    #: Publish every batch to ``{region}.screen`` too (``IOTSCHED_SCREENING=0`` turns it off).
    screening: bool = True
    #: Incident notifications are also POSTed here as JSON when set.
    alert_webhook_url: str = ""

    @property
    def topology(self) -> Topology:
        return Topology(tiers=self.tiers, regions=self.regions)

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        base = cls()
        try:
            regions = _csv(e.get("IOTSCHED_REGIONS", ",".join(base.regions)))
            return cls(
                redis_url=e.get("IOTSCHED_REDIS_URL", base.redis_url),
                broker_url=e.get("IOTSCHED_BROKER_URL", ""),
                key_prefix=e.get("IOTSCHED_KEY_PREFIX", base.key_prefix),
                regions=regions,
                tiers=_csv(e.get("IOTSCHED_TIERS", ",".join(base.tiers))),
                metrics=_csv(e.get("IOTSCHED_METRICS", ",".join(base.metrics))),
                region_broker_urls={
                    r: e[f"IOTSCHED_BROKER_URL_{r.upper().replace('-', '_')}"]
                    for r in regions
                    if f"IOTSCHED_BROKER_URL_{r.upper().replace('-', '_')}" in e
                },
                visibility_timeout_s=int(
                    e.get("IOTSCHED_VISIBILITY_TIMEOUT_S", base.visibility_timeout_s)
                ),
                unacked_restore_interval_s=int(
                    e.get("IOTSCHED_UNACKED_RESTORE_INTERVAL_S", base.unacked_restore_interval_s)
                ),
                screening=e.get("IOTSCHED_SCREENING", "1").strip().lower()
                not in ("0", "false", "no", "off"),
                alert_webhook_url=e.get("IOTSCHED_ALERT_WEBHOOK_URL", ""),
            )
        except ValueError as exc:
            raise ConfigError(f"bad IOTSCHED_* setting: {exc}") from exc
