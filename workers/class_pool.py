"""Real worker processes per region laid out by capacity class (workers/profiles.py).

Like ``workers.cluster.LocalCluster`` (and stopped or killed the same way),
but a region gets one ``celery worker`` per role the capacity ledger grants
slots to: ``premium`` (the guarantee), ``standard`` (the minimum share),
``data`` (anomaly burst, screening and the rest by demand), ``maintenance``.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

from scheduler.capacity import CapacityBudget
from workers.cluster import PROJECT_ROOT, LocalCluster, worker_env
from workers.profiles import ClassWorker, class_workers, worker_argv


@dataclass
class ClassPool(LocalCluster):
    """``start()`` launches every region's class workers; ``procs`` is keyed by node name."""

    budget: CapacityBudget = field(default_factory=lambda: CapacityBudget(total_slots=1))
    maintenance_reserved_slots: int = 0
    layout: dict[str, list[ClassWorker]] = field(default_factory=dict)

    def start(self, role: str = "data") -> None:
        """Start the class workers (``role`` is ignored: the ledger decides the roles)."""
        env = worker_env(self.redis_url, self.key_prefix, **self.env_extra)
        for region in self.regions:
            workers = class_workers(region, self.budget, self.maintenance_reserved_slots)
            self.layout[region] = workers
            for name, _queues, concurrency in workers:
                worker_role = name.removesuffix(f"-{region}")
                argv = worker_argv(region, worker_role, concurrency, self.pool, self.loglevel)
                self.procs[name] = subprocess.Popen(
                    argv, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=sys.stderr
                )
