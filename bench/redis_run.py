"""A run against real Redis with real worker processes, owning one key prefix.

Everything it writes (state and broker keys) lives under its prefix, and it
deletes exactly those keys when it ends; nothing else on the server is touched.
"""

from __future__ import annotations

import signal
import sys
import uuid
from types import TracebackType
from typing import Any

import redis

from bench.sending import bench_publisher
from bench.worker_launch import wait_workers_ready
from ingest.backlog_gate import admission_gate
from ingest.premium_backlog import PremiumBacklog
from ingest.producer import Producer
from ingest.synthetic import SyntheticStream
from scheduler.batching import BatchingConfig
from scheduler.held_screening import HeldScreenBudget
from scheduler.registry import Registry, generate_registry
from scheduler.settings import Settings
from scheduler.validation import Limits
from stores.inflight import InflightLedger
from stores.keys import Keys
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
from workers.cluster import LocalCluster


class RedisRun:
    def __init__(
        self,
        redis_url: str,
        key_prefix: str | None = None,
        devices: int = 100_000,
        seed: int = 0,
        concurrency: int = 1,
        pool: str = "prefork",
        batching: BatchingConfig | None = None,
        keep: bool = False,
        registry: Registry | None = None,
        metrics: tuple[str, ...] = ("value",),
    ) -> None:
        """``registry``: the fleet to use instead of a generated one of ``devices``;
        ``metrics``: what each reading carries (IOTSCHED_METRICS)."""
        self.redis_url = redis_url
        prefix = key_prefix or f"iotsched-run-{uuid.uuid4().hex[:8]}"
        self.settings = Settings(redis_url=redis_url, key_prefix=prefix, metrics=metrics)
        self.keys = Keys(prefix)
        self.store = RedisStateStore(redis.Redis.from_url(redis_url), self.keys)
        self.devices = devices
        self.seed = seed
        self.keep = keep
        self.batching = batching
        # The default layout per region: a data worker and a premium lane, sized as a
        # deployment sizes it (IOTSCHED_PREMIUM_GUARANTEE_SLOTS; 0 runs no lane).
        self.cluster = LocalCluster(
            redis_url,
            prefix,
            self.settings.regions,
            concurrency=concurrency,
            pool=pool,
            lane_slots=Settings.from_env().premium_guarantee_slots,
        )
        self.app = broker_app(redis_url, self.keys)
        self.registry: Registry | None = registry
        self._producer: Producer | None = None

    def __enter__(self) -> RedisRun:
        # A TERM (Ctrl-C from a supervisor, a timeout) still runs the clean-up below.
        signal.signal(signal.SIGTERM, _exit_on_term)
        if self.registry is None:
            self.registry = generate_registry(self.devices, seed=self.seed)
        self.store.save_registry(self.registry)
        self.registry = self.store.load_registry()
        self.cluster.start()
        self.wait_workers_ready()
        return self

    def wait_workers_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until every worker started answers a ping, so start-up is not measured."""
        if not wait_workers_ready(self.app, self.cluster.node_count, timeout_s):
            print(f"workers did not all answer within {timeout_s:.0f} s", file=sys.stderr)

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            reg = self.registry
            assert reg is not None
            gate = admission_gate(self.settings, self.store.client, self.keys)
            self._producer = Producer(
                lambda: reg,
                bench_publisher(self.app, ledger=InflightLedger(self.store.client, self.keys)),
                self.store,
                limits=Limits(metrics=self.settings.metrics),
                batching=self.batching,
                # Admission control as a deployment runs it: on, measured.
                backlog_gate=gate,
                screen_cost=lambda: gate.screen_cost_ratio,
                held_screening=gate.feed(HeldScreenBudget()),
                # Premium coalescing as a deployment runs it: on.
                premium_backlog=PremiumBacklog(
                    self.store.client, self.keys, self.settings.topology
                ),
            )
        return self._producer

    def stream(self, n_metrics: int = 1) -> SyntheticStream:
        assert self.registry is not None
        return SyntheticStream(self.registry, n_metrics=n_metrics, seed=self.seed)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        *_: Any,
    ) -> None:
        self.cluster.stop()
        self.app.close()
        if not self.keep:
            self.store.delete_all()


def _exit_on_term(signum: int, frame: object) -> None:
    sys.exit(128 + signum)
