"""Task tests build a Runtime: memory or Redis (fakeredis) stores, and an app that records
what the Publisher sends instead of publishing it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from runtime_doubles import MakeRuntime, RecordingApp

from runtime.runtime import Runtime, memory_runtime, redis_runtime
from scheduler.settings import Settings
from tasks.app import app as tasks_app


@pytest.fixture
def recording_app() -> RecordingApp:
    return RecordingApp()


@pytest.fixture
def make_runtime(recording_app: RecordingApp) -> Iterator[MakeRuntime]:
    """``make_runtime(client=None, **settings)``: a Redis runtime on ``client`` (fakeredis),
    or a memory one without; sends are recorded; installed on the tasks' app until the
    test ends, so tasks called directly (``.apply``) use it too."""

    def make(client: Any = None, **settings: Any) -> Runtime:
        cfg = Settings(**settings)
        if client is None:
            rt = memory_runtime(cfg, recording_app)  # type: ignore[arg-type]
        else:
            rt = redis_runtime(cfg, recording_app, client=client)  # type: ignore[arg-type]
        tasks_app.install_runtime(rt)
        return rt

    yield make
    tasks_app.install_runtime(None)
