"""Celery apps configured from ``celeryconfig``: the workers', and the producers' per broker.

Building an app registers no task: a producer or a bench that only sends needs
nothing of ``tasks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery

from stores.keys import Keys


def make_app(**overrides: Any) -> Celery:
    """A Celery app with iotsched's declarations; overrides (tests, demo) win."""
    celery_app = Celery("iotsched")
    celery_app.config_from_object("celeryconfig", force=True)
    if overrides:
        celery_app.conf.update(**overrides)
    return celery_app


def broker_app(broker_url: str, keys: Keys) -> Celery:
    """An app publishing for the deployment (or run) that owns ``keys.prefix``: its broker
    keys live under the same prefix, and workers take queues in ``-Q`` order (celeryconfig's
    strategy). Other transport options keep kombu's defaults, as this app always had."""
    base = make_app()
    strategy = base.conf.broker_transport_options["queue_order_strategy"]
    base.conf.update(
        broker_url=broker_url,
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
