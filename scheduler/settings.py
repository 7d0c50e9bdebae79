"""Runtime settings, read once from the environment (``IOTSCHED_*``) into one object."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from scheduler import defaults
from scheduler.errors import ConfigError
from scheduler.model import DEFAULT_REGIONS, DEFAULT_TIERS, Topology
from scheduler.redis_url import normalize_redis_url
from scheduler.scaling import ScalingConfig


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
    #: Routine readings waiting per region past which ingest pushes back (0: no cap).
    backlog_cap_readings: int = 0
    #: Incident notifications are also POSTed here as JSON when set.
    alert_webhook_url: str = ""
    #: Incidents are also posted to this Alertmanager (its base URL) when set.
    alertmanager_url: str = ""
    #: ``worker_autoscaler`` for ``--autoscale``: "queue" (workers.autoscaler) or
    #: "stock" (Celery's).
    autoscaler: str = "queue"
    #: How often the autoscaler's background thread re-reads queue figures from Redis.
    autoscale_refresh_s: float = 0.25
    #: Shrink only to the largest demand seen within this window.
    scale_down_window_s: float = ScalingConfig.scale_down_window_s
    #: A backlog should be cleared within this long by the slots added for it.
    drain_target_s: float = ScalingConfig.drain_target_s
    #: Tasks one slot is assumed to finish per second until it has been measured.
    service_rps_prior: float = 10.0
    #: Holt level weight per second for arrivals (ScalingConfig's default); higher
    #: forgets a burst sooner, so the pool shrinks sooner after the window.
    forecast_alpha: float = ScalingConfig.forecast_alpha
    #: A region's slot budget (the cloud limit) and the shares held for classes.
    region_budget_slots: int = 64
    #: Slots of the premium lane per region (``iotsched worker --role premium``).
    premium_guarantee_slots: int = defaults.PREMIUM_GUARANTEE_SLOTS
    #: Niceness a worker consuming standard work adds to itself at start (workers/priority.py).
    routine_worker_nice: int = defaults.ROUTINE_WORKER_NICE
    standard_min_slots: int = 0
    anomaly_burst_slots: int = 0
    screen_min_slots: int = 0
    #: Tries of a maintenance operation inside its window, and the first backoff (doubling).
    maintenance_max_tries: int = 3
    maintenance_backoff_s: float = 5.0
    #: How long before a window data pools start giving up its slots (pre-drain).
    maintenance_predrain_lead_s: float = defaults.MAINTENANCE_PREDRAIN_LEAD_S
    #: At most one accelerated pass per incident per this many seconds.
    accelerate_min_interval_s: float = 1.0

    @property
    def topology(self) -> Topology:
        return Topology(tiers=self.tiers, regions=self.regions)

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Every field ``name`` is read from ``IOTSCHED_<NAME>``; a region's own broker
        from ``IOTSCHED_BROKER_URL_<REGION>`` (dashes as underscores)."""
        e = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = f"IOTSCHED_{f.name.upper()}"
            if f.name == "region_broker_urls" or var not in e:
                continue
            parse = _PARSERS[str(f.type)]
            try:
                values[f.name] = parse(e[var])
            except ValueError as exc:
                raise ConfigError(f"{var}={e[var]!r}: expected {f.type}") from exc
        regions = values.get("regions", cls.regions)
        values["region_broker_urls"] = {
            r: normalize_redis_url(e[var])
            for r in regions
            if (var := f"IOTSCHED_BROKER_URL_{r.upper().replace('-', '_')}") in e
        }
        for name in ("redis_url", "broker_url"):
            if name in values:
                values[name] = normalize_redis_url(values[name])
        return cls(**values)


def _flag(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": _flag,
    "tuple[str, ...]": _csv,
}
