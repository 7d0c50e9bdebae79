"""Test doubles for task tests: an app that records what the Publisher sends."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from runtime.runtime import Runtime


class RecordingApp:
    """Stands in for a Celery app: keeps every ``send_task`` call."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def send_task(self, name: str, args: tuple[Any, ...] = (), **options: Any) -> None:
        self.sent.append((name, tuple(args), options))

    def producer_or_acquire(self) -> Any:
        """No broker to pipeline to: a producer whose publish batch does nothing."""
        return contextlib.nullcontext(SimpleNamespace(batch=lambda size: contextlib.nullcontext()))

    def named(self, task: str) -> list[tuple[Any, ...]]:
        """Arguments of every message sent to ``task``."""
        return [args for name, args, _ in self.sent if name == task]


#: ``make_runtime(client=None, **settings)`` (the fixture in conftest.py).
MakeRuntime = Callable[..., Runtime]
