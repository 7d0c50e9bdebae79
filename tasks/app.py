"""The Celery application: configured from celeryconfig, tasks registered from tasks.*."""

from __future__ import annotations

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


app = make_app()


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # Prefork children must not reuse the parent's Redis sockets.
    context.reset()
