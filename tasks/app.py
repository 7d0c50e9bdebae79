"""The Celery application: configured from celeryconfig, tasks registered from tasks.*."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from tasks import context


def make_app(**overrides: Any) -> Celery:
    """A Celery app with iotsched's declarations; overrides (tests, demo) win."""
    celery_app = Celery("iotsched")
    celery_app.config_from_object("celeryconfig", force=True)
    if overrides:
        celery_app.conf.update(**overrides)
    return celery_app


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


app = make_app()


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # Prefork children must not reuse the parent's Redis sockets.
    context.reset()
