"""Severity of an incident, and the policy that raises it with breadth.

An incident is as loud as the widest of two measures: the distinct devices it (or its
cascade) holds, and the groups in its cascade. A fleet-wide event pages; a handful of
devices of one group is a warning.
"""

from __future__ import annotations

import enum
from typing import Protocol


class Severity(enum.IntEnum):
    """How loud an incident is; rises with its breadth."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2
    PAGE = 3


class SeverityThresholds(Protocol):
    """The breadths at which severity rises (``CorrelatorConfig`` carries them)."""

    @property
    def warning_devices(self) -> int: ...
    @property
    def critical_devices(self) -> int: ...
    @property
    def page_devices(self) -> int: ...
    @property
    def critical_groups(self) -> int: ...
    @property
    def page_groups(self) -> int: ...


def severity_for(thresholds: SeverityThresholds, n_devices: int, n_groups: int) -> Severity:
    """The severity of ``n_devices`` distinct devices across ``n_groups`` groups."""
    return max(_by_devices(thresholds, n_devices), _by_groups(thresholds, n_groups))


def _by_devices(thresholds: SeverityThresholds, n_devices: int) -> Severity:
    if n_devices >= thresholds.page_devices:
        return Severity.PAGE
    if n_devices >= thresholds.critical_devices:
        return Severity.CRITICAL
    if n_devices >= thresholds.warning_devices:
        return Severity.WARNING
    return Severity.INFO


def _by_groups(thresholds: SeverityThresholds, n_groups: int) -> Severity:
    if n_groups >= thresholds.page_groups:
        return Severity.PAGE
    if n_groups >= thresholds.critical_groups:
        return Severity.CRITICAL
    return Severity.INFO
