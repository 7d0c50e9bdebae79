"""WebhookSink: HTTP POST of each notification as JSON, with a timeout and retries.

Connection failures, timeouts, 429 and 5xx answers are retried with exponential
backoff; any other 4xx means the receiver rejects the document and retrying cannot
help. The anomaly task runs sinks after the incident state is saved, so a receiver
that is down costs at most ``timeout_s`` x ``attempts`` plus the backoff, per document.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from scheduler.errors import PermanentError, TransientError

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class WebhookSink:
    name = "webhook"

    def __init__(
        self,
        url: str,
        timeout_s: float = 2.0,
        attempts: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep

    def emit(self, documents: Sequence[dict[str, Any]]) -> None:
        for doc in documents:
            self._post(json.dumps(doc, sort_keys=True).encode())

    def _post(self, body: bytes) -> None:
        last: Exception | None = None
        for attempt in range(self.attempts):
            if attempt:
                self.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))
            request = urllib.request.Request(
                self.url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "iotsched-alerts"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code not in RETRY_STATUS:
                    raise PermanentError(
                        f"webhook {self.url} refused the alert: {exc.code}"
                    ) from exc
                last = exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = exc
        raise TransientError(
            f"webhook {self.url} failed after {self.attempts} attempts: {last!r}"
        ) from last
