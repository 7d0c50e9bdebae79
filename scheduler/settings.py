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
    #: ``worker_autoscaler`` for ``--autoscale``: "queue" (workers.autoscaler) or
    #: "stock" (Celery's).
    autoscaler: str = "queue"
    #: How often the autoscaler's background thread re-reads queue figures from Redis.
    autoscale_refresh_s: float = 0.25
    #: Shrink only to the largest demand seen within this window.
    scale_down_window_s: float = 60.0
    #: A backlog should be cleared within this long by the slots added for it.
    drain_target_s: float = 2.0
    #: Tasks one slot is assumed to finish per second until it has been measured.
    service_rps_prior: float = 10.0
    #: Holt level weight per second for arrivals (ScalingConfig's default); higher
    #: forgets a burst sooner, so the pool shrinks sooner after the window.
    forecast_alpha: float = 0.1
    #: A region's slot budget (the cloud limit) and the shares held for classes.
    region_budget_slots: int = 64
    premium_guarantee_slots: int = 0
    standard_min_slots: int = 0
    anomaly_burst_slots: int = 0
    screen_min_slots: int = 0
    #: Tries of a maintenance operation inside its window, and the first backoff (doubling).
    maintenance_max_tries: int = 3
    maintenance_backoff_s: float = 5.0

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
                autoscaler=e.get("IOTSCHED_AUTOSCALER", base.autoscaler),
                autoscale_refresh_s=float(
                    e.get("IOTSCHED_AUTOSCALE_REFRESH_S", base.autoscale_refresh_s)
                ),
                scale_down_window_s=float(
                    e.get("IOTSCHED_SCALE_DOWN_WINDOW_S", base.scale_down_window_s)
                ),
                drain_target_s=float(e.get("IOTSCHED_DRAIN_TARGET_S", base.drain_target_s)),
                service_rps_prior=float(
                    e.get("IOTSCHED_SERVICE_RPS_PRIOR", base.service_rps_prior)
                ),
                forecast_alpha=float(e.get("IOTSCHED_FORECAST_ALPHA", base.forecast_alpha)),
                region_budget_slots=int(
                    e.get("IOTSCHED_REGION_BUDGET_SLOTS", base.region_budget_slots)
                ),
                premium_guarantee_slots=int(
                    e.get("IOTSCHED_PREMIUM_GUARANTEE_SLOTS", base.premium_guarantee_slots)
                ),
                standard_min_slots=int(
                    e.get("IOTSCHED_STANDARD_MIN_SLOTS", base.standard_min_slots)
                ),
                anomaly_burst_slots=int(
                    e.get("IOTSCHED_ANOMALY_BURST_SLOTS", base.anomaly_burst_slots)
                ),
                screen_min_slots=int(e.get("IOTSCHED_SCREEN_MIN_SLOTS", base.screen_min_slots)),
                maintenance_max_tries=int(
                    e.get("IOTSCHED_MAINTENANCE_MAX_TRIES", base.maintenance_max_tries)
                ),
                maintenance_backoff_s=float(
                    e.get("IOTSCHED_MAINTENANCE_BACKOFF_S", base.maintenance_backoff_s)
                ),
            )
        except ValueError as exc:
            raise ConfigError(f"bad IOTSCHED_* setting: {exc}") from exc
