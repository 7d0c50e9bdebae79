"""Real Celery worker processes on this machine, per region, sharing one Redis.

A region runs the default layout (workers.profiles.DEFAULT_ROLES): its data worker and,
beside it, a premium lane that consumes premium work only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scheduler import defaults
from workers.profiles import worker_argv

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def worker_env(redis_url: str, key_prefix: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        IOTSCHED_REDIS_URL=redis_url,
        IOTSCHED_KEY_PREFIX=key_prefix,
        PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])),
    )
    env.update(extra)
    return env


@dataclass
class LocalCluster:
    """Starts ``celery worker`` processes; stop() shuts them down warmly, then kills.

    ``lane_slots``: pool size of each region's premium lane, started with the data
    workers (0: none, the layout before the lane, for rigs that measure a data worker alone).
    """

    redis_url: str
    key_prefix: str
    regions: Sequence[str]
    concurrency: int = 1
    pool: str = "prefork"
    loglevel: str = "WARNING"
    env_extra: dict[str, str] = field(default_factory=dict)
    lane_slots: int = defaults.PREMIUM_GUARANTEE_SLOTS
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, role: str = "data") -> None:
        """Start ``role``'s worker per region; with ``data``, each region's premium lane too."""
        env = worker_env(self.redis_url, self.key_prefix, **self.env_extra)
        for region in self.regions:
            self._start(env, region, role, self.concurrency)
            if role == "data" and self.lane_slots > 0:
                self._start(env, region, "premium", self.lane_slots)

    def restart(self, name: str) -> None:
        """Start worker ``name`` (``{role}-{region}``, as in ``procs``) again, alone, as a
        restart policy would after it exited or was killed; its region's other workers
        (the premium lane beside a data worker) are left as they are."""
        role, _, region = name.partition("-")
        env = worker_env(self.redis_url, self.key_prefix, **self.env_extra)
        self._start(env, region, role, self.lane_slots if role == "premium" else self.concurrency)

    def _start(self, env: dict[str, str], region: str, role: str, concurrency: int) -> None:
        argv = worker_argv(region, role, concurrency, self.pool, self.loglevel)
        self.procs[f"{role}-{region}"] = subprocess.Popen(
            argv, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=sys.stderr
        )

    @property
    def node_count(self) -> int:
        """Workers started (each a Celery node answering pings)."""
        return len(self.procs)

    def kill(self, name: str) -> None:
        """SIGKILL a worker and its pool children, as a crash would."""
        proc = self.procs.pop(name)
        children = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        proc.wait()

    def stop(self, timeout_s: float = 15.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:
        return []
    return [int(x) for x in out.split()]
