"""The maintenance operations on the in-memory stores (the embedded run).

Same names and outcomes as ``stores.maintenance_ops``; memory holds a process's
data, so each operation finishes in one step and never needs its cursor.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from scheduler import defaults
from scheduler.maintenance_plan import OpOutcome
from stores.detector_store import MemoryDetectorStore
from stores.maintenance_ops import operation, rebuild_registry_of
from stores.memory_state import MemoryStateStore


class MemoryMaintenanceOps:
    def __init__(
        self,
        state: MemoryStateStore,
        detector: MemoryDetectorStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.detector = detector
        self.clock = clock

    def run(self, name: str, cursor: str, deadline_ts: float) -> OpOutcome:
        operation(name)  # an unknown name raises ConfigError, as on Redis
        if name == "compact_detector_state":
            examined, dropped = self.detector.drop_idle(defaults.SILENT_DEVICE_S)
            return OpOutcome(True, "", {"examined": examined, "dropped": dropped, "ttl_set": 0})
        if name == "expire_rollups":
            oldest = self.clock() - defaults.ROLLUP_TTL_S
            examined, deleted = self.state.drop_rollups_before(oldest)
            return OpOutcome(True, "", {"examined": examined, "deleted": deleted, "ttl_set": 0})
        if name == "trim_streams":
            # The in-memory dead letters are a deque bounded at DEAD_LETTER_MAXLEN and the
            # in-memory alert sink a list: nothing grows past its bound.
            return OpOutcome(True, "", {"dead_letters": 0, "alerts": 0})
        return rebuild_registry_of(self.state)
