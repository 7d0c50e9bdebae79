"""Kept for callers that name the operations here: they live in ``stores.maintenance_ops``."""

from scheduler.maintenance_plan import OpOutcome
from stores.maintenance_ops import (
    OPERATIONS,
    Operation,
    compact_detector_state,
    expire_rollups,
    operation,
    rebuild_registry,
    trim_streams,
)

__all__ = [
    "OPERATIONS",
    "OpOutcome",
    "Operation",
    "compact_detector_state",
    "expire_rollups",
    "operation",
    "rebuild_registry",
    "trim_streams",
]
