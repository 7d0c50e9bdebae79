"""Kept for callers not yet moved to the Runtime (``workers.autoscaler``): the settings of
this process's Runtime. New code takes a ``runtime.runtime.Runtime`` instead."""

from __future__ import annotations

from scheduler.settings import Settings
from tasks.app import app


def settings() -> Settings:
    return app.runtime.settings
