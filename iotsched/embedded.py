"""The embedded default: kombu's in-memory transport and an in-process worker.

Runs the whole path on a machine with no services installed. DESIGN measured
that the memory transport needs a 1 ms polling interval and a threads pool to
keep up with batched tasks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from celery import Celery
from celery.contrib.testing.worker import start_worker

import tasks.all  # noqa: F401  (registers every task on the app)
from runtime import memory_broker
from runtime.runtime import memory_runtime
from scheduler.settings import Settings
from stores.memory_state import MemoryStateStore
from tasks.app import app
from workers.profiles import region_queues


@contextmanager
def embedded_worker(
    settings: Settings, store: MemoryStateStore, concurrency: int = 2
) -> Iterator[Celery]:
    saved = {k: app.conf[k] for k in ("broker_url", "broker_transport", "broker_transport_options")}
    app.conf.update(
        # A host name, or kombu warns "No hostname was supplied" on every connection.
        broker_url="memory://localhost/",
        broker_transport=None,
        broker_transport_options={"polling_interval": 0.001},
    )
    # Every store in memory, reading the in-memory broker: preemption, the in-flight
    # ledger and accelerated processing work as in a deployment.
    app.install_runtime(
        memory_runtime(
            settings,
            app,
            state=store,
            depth_of=memory_broker.depth_of,
            payloads_of=memory_broker.routine_payloads_of,
        )
    )
    queues: Sequence[str] = [q for r in settings.regions for q in region_queues(r)]
    try:
        with start_worker(
            app,
            pool="threads",
            concurrency=concurrency,
            perform_ping_check=False,
            loglevel="WARNING",
            queues=list(queues),
            shutdown_timeout=30.0,
        ):
            yield app
    finally:
        # The process may go on (tests, a caller's own work): leave the app as found,
        # with no connection pool still bound to the in-memory broker.
        app.close()
        app.conf.update(saved)
        app.install_runtime(None)
