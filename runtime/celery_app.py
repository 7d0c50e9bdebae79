"""Celery apps configured from ``celeryconfig``: the workers', and the producers' per broker.

Building an app registers no task: a producer or a bench that only sends needs
nothing of ``tasks``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from celery import Celery

from runtime.redis_transport import transport_for
from runtime.runtime import Runtime, redis_runtime
from scheduler.settings import Settings
from stores.keys import Keys


class IotschedApp(Celery):  # type: ignore[misc]
    """A Celery app carrying its process's Runtime.

    Built from the environment's settings on first use; ``install_runtime`` puts
    another in its place (the embedded run, tests) or, with None, drops it so the
    next use builds a fresh one (a forked pool child must not reuse its parent's
    sockets).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._runtime: Runtime | None = None
        self._runtime_lock = threading.Lock()

    @property
    def runtime(self) -> Runtime:
        rt = self._runtime
        if rt is None:
            with self._runtime_lock:
                if self._runtime is None:
                    settings = Settings.from_env()
                    apps = region_apps(self, settings.region_broker_urls)
                    self._runtime = redis_runtime(settings, self, apps)
                rt = self._runtime
        return rt

    def install_runtime(self, rt: Runtime | None) -> None:
        with self._runtime_lock:
            self._runtime = rt


def make_app(**overrides: Any) -> IotschedApp:
    """A Celery app with iotsched's declarations; overrides (tests, demo) win."""
    celery_app = IotschedApp("iotsched")
    celery_app.config_from_object("celeryconfig", force=True)
    if "broker_url" in overrides:
        overrides.setdefault("broker_transport", transport_for(overrides["broker_url"]))
    if overrides:
        celery_app.conf.update(**overrides)
    return celery_app


def broker_app(broker_url: str, keys: Keys) -> IotschedApp:
    """An app publishing for the deployment (or run) that owns ``keys.prefix``: its broker
    keys live under the same prefix, and workers take queues in ``-Q`` order (celeryconfig's
    strategy). Other transport options keep kombu's defaults, as this app always had."""
    base = make_app()
    strategy = base.conf.broker_transport_options["queue_order_strategy"]
    base.conf.update(
        broker_url=broker_url,
        broker_transport=transport_for(broker_url),
        broker_transport_options={
            "queue_order_strategy": strategy,
            "global_keyprefix": keys.broker_prefix,
        },
    )
    return base


def region_apps(default_app: Celery, region_broker_urls: Mapping[str, str]) -> dict[str, Celery]:
    """One app per distinct region broker URL (configured like ``default_app`` otherwise);
    regions on the shared broker are left out."""
    transport: dict[str, Any] = dict(default_app.conf.broker_transport_options or {})
    by_url: dict[str, Celery] = {}
    apps: dict[str, Celery] = {}
    for region, url in region_broker_urls.items():
        if not url or url == default_app.conf.broker_url:
            continue
        if url not in by_url:
            by_url[url] = make_app(broker_url=url, broker_transport_options=transport)
        apps[region] = by_url[url]
    return apps
