"""The Celery application: configured from celeryconfig, tasks registered from tasks.*."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from runtime.celery_app import broker_app, make_app, region_apps
from tasks import context

__all__ = ["app", "broker_app", "make_app", "region_apps"]

app = make_app()


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # Prefork children must not reuse the parent's Redis sockets.
    context.reset()
