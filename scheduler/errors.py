"""One error hierarchy: transient errors are retried, permanent ones dead-lettered."""

from __future__ import annotations


class IotschedError(Exception):
    """Raised for any failure that iotsched itself detects; the root of all its errors."""


class TransientError(IotschedError):
    """Raised when an operation may succeed if tried again (a broker or store hiccup)."""


class PermanentError(IotschedError):
    """Raised when retrying cannot help: the input or the configuration is wrong."""


class InvalidReading(PermanentError):
    """Raised when a reading fails validation; `reason` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class InvalidBatch(PermanentError):
    """Raised when a micro-batch payload cannot be decoded or is inconsistent."""


class ConfigError(PermanentError):
    """Raised when settings, a registry file or a command-line value is invalid."""


class Backpressure(TransientError):
    """Raised when a region's backlog is past its cap: ingest must slow down, nothing is dropped."""

    def __init__(self, region: str, backlog_readings: int, cap_readings: int) -> None:
        super().__init__(
            f"region {region} backlog {backlog_readings} readings exceeds cap {cap_readings}"
        )
        self.region = region
        self.backlog_readings = backlog_readings
        self.cap_readings = cap_readings


class RegistryChanged(TransientError):
    """Raised when the registry was replaced under the snapshot a store was called with."""
