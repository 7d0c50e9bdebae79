"""Given a pool child starting, it loads what its first task would otherwise pay for."""

from __future__ import annotations

import logging

import fakeredis
import pytest
from runtime_doubles import MakeRuntime

from scheduler.errors import ConfigError
from scheduler.registry import generate_registry
from stores.keys import Keys
from tasks.app import app, warm_up

KEYS = Keys("t-warm")


def test_a_warmed_process_holds_the_registry_snapshot_before_its_first_task(
    make_runtime: MakeRuntime,
) -> None:
    client = fakeredis.FakeRedis()
    rt = make_runtime(client, key_prefix=KEYS.prefix)
    reg = generate_registry(200, seed=5)
    rt.stores.state.save_registry(reg)
    # The snapshot's refresh interval never lapses here, however slow the machine
    rt.registry.clock = lambda: 0.0
    # When the process warms up
    warm_up(app)
    # Then its snapshot is loaded: a task finds it even with the stored registry gone
    # (within the refresh interval nothing is read again)
    client.delete(*client.keys(f"{KEYS.prefix}*registry*"))
    assert rt.registry.get().version == reg.version


def test_a_process_with_no_registry_stored_still_starts(
    make_runtime: MakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    rt = make_runtime(fakeredis.FakeRedis(), key_prefix=KEYS.prefix)
    # When a process warms up before any registry is stored
    with caplog.at_level(logging.INFO, logger="tasks.app"):
        warm_up(app)
    # Then it starts, says so, and its first task loads (and reports) the registry itself
    assert "left to the first task" in caplog.text
    with pytest.raises(ConfigError, match="no device registry stored"):
        rt.registry.get()
