"""The Celery application: configured from celeryconfig, tasks registered from tasks.*."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from runtime.celery_app import IotschedApp, broker_app, make_app, region_apps

__all__ = ["IotschedApp", "app", "broker_app", "make_app", "region_apps"]

app = make_app()


@worker_process_init.connect
def _fresh_runtime(**_: Any) -> None:
    # A prefork child builds its own Runtime: it must not reuse the parent's Redis sockets.
    app.install_runtime(None)
