"""Starting real worker processes for a bench or a test, and waiting on them.

The processes themselves are launched by ``workers.cluster.LocalCluster`` (one data
worker per region and role), ``workers.class_pool.ClassPool`` (workers laid out by
capacity class) and ``workers.supervisor.Supervisor`` (an autoscaled fleet); here are
the waits every rig needs around them, and the control worker that runs beat.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from celery import Celery

from scheduler.errors import TransientError
from workers.beat import control_worker_argv
from workers.cluster import PROJECT_ROOT, worker_env

#: How long a worker process may take to start and answer a ping on a loaded machine.
WORKER_READY_TIMEOUT_S = 60.0


class WaitTimedOut(TransientError):
    """Raised when what a rig waits for (workers, a drain, a pool size) did not happen in time."""


def wait_for(
    ready: Callable[[], bool],
    timeout_s: float,
    what: str,
    detail: Callable[[], str] | None = None,
    poll_s: float = 0.05,
) -> float:
    """Poll ``ready`` until it holds; returns when it did (epoch s). ``detail`` adds the
    state worth seeing to the timeout's message."""
    deadline = time.time() + timeout_s
    while not ready():
        if time.time() > deadline:
            more = f" {detail()}" if detail is not None else ""
            raise WaitTimedOut(f"timed out after {timeout_s:.0f} s waiting for {what}{more}")
        time.sleep(poll_s)
    return time.time()


def answering_nodes(app: Celery) -> set[str]:
    """Worker node names (before the ``@``) that answer a ping now."""
    replies = app.control.ping(timeout=0.5) or []
    return {name.split("@")[0] for reply in replies for name in reply}


def wait_workers_ready(app: Celery, nodes: int, timeout_s: float = WORKER_READY_TIMEOUT_S) -> bool:
    """Wait until ``nodes`` workers answer a ping, so start-up is not measured; whether they did."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if len(app.control.ping(timeout=0.5) or []) >= nodes:
            return True
    return False


def start_control_worker(redis_url: str, key_prefix: str, **env: str) -> subprocess.Popen[bytes]:
    """The control worker (beat and the control queue), as a deployment runs it."""
    return subprocess.Popen(
        control_worker_argv(),
        env=worker_env(redis_url, key_prefix, **env),
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
    )
