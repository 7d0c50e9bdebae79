"""LogSink: one log line per notification, for operators tailing worker logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

LOGGER = logging.getLogger("iotsched.alerts")


class LogSink:
    name = "log"

    def __init__(self, logger: logging.Logger = LOGGER, level: int = logging.WARNING) -> None:
        self.logger = logger
        self.level = level

    def emit(self, documents: Sequence[dict[str, Any]]) -> None:
        for doc in documents:
            self.logger.log(
                self.level,
                "incident %s %s severity=%s devices=%d: %s",
                doc["incident_id"],
                doc["status"],
                doc["severity"],
                doc["device_count"],
                json.dumps(doc, sort_keys=True),
            )
