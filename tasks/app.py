"""The Celery application: configured from celeryconfig, tasks registered from tasks.*."""

from __future__ import annotations

import logging
from typing import Any

# Loaded once in the worker's parent, before its pool forks, rather than by each child's
# first task: numpy imports numpy.ma lazily (np.unique pulls it in).
import numpy.ma  # noqa: F401
from celery.signals import worker_process_init

# The worker's parent decodes each large message body with this kernel
# (runtime.redis_transport): compiled, or loaded from numba's cache, before the first one.
import runtime.base64_body  # noqa: F401
from runtime.celery_app import IotschedApp, broker_app, make_app, region_apps

__all__ = ["IotschedApp", "app", "broker_app", "make_app", "region_apps"]

LOGGER = logging.getLogger(__name__)

app = make_app()


@worker_process_init.connect
def _fresh_runtime(**_: Any) -> None:
    # A prefork child builds its own Runtime: it must not reuse the parent's Redis sockets.
    app.install_runtime(None)
    warm_up(app)


def warm_up(celery_app: IotschedApp) -> None:
    """Build the process's Runtime and load the registry snapshot its first task would
    otherwise load.

    A child's first task paid for its Runtime (settings, region apps, connections), the
    registry snapshot and numpy's lazily imported ``numpy.ma`` (now imported with this
    module, before the fork): 150 us a reading in every child's first 5,000-reading
    routine task at 2x capacity, against 1.5-3 after. That held up the first premium
    batches, and the screening-cost meter (``scheduler.screen_cost``) took it for what a
    routine reading costs, so held screening was budgeted at several times its share.
    Best effort: a store not reachable yet is loaded by the first task, as before."""
    try:
        celery_app.runtime.registry.get()
    except Exception as exc:  # any failure leaves it to the lazy path
        LOGGER.info("worker warm-up left to the first task: %r", exc)
