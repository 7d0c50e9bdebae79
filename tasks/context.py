"""What a task needs from its process, built once per process on first use.

Real workers build a Redis store from settings; the embedded runner installs
an in-memory one before starting its in-process worker. Forked pool children
drop everything (``reset``) so they never share their parent's sockets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar

from scheduler.settings import Settings
from stores.keys import Keys
from stores.protocols import StateStore

T = TypeVar("T")


class PerProcess(Generic[T]):
    """A value built on first use in this process; ``install`` replaces it (tests, embedded)."""

    _every: ClassVar[list[PerProcess[object]]] = []

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()
        PerProcess._every.append(self)  # type: ignore[arg-type]

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
                value = self._value
        return value

    def install(self, value: T | None) -> None:
        with self._lock:
            self._value = value


_settings: Settings | None = None


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def _redis_store() -> StateStore:
    from stores.redis_state import RedisStateStore

    cfg = settings()
    return RedisStateStore.from_url(cfg.redis_url, Keys(cfg.key_prefix))


_store: PerProcess[StateStore] = PerProcess(_redis_store)


def store() -> StateStore:
    return _store.get()


def install(store: StateStore, cfg: Settings | None = None) -> None:
    """Use this store (and settings) for every task in this process."""
    global _settings
    _store.install(store)
    if cfg is not None:
        _settings = cfg


def reset() -> None:
    """Forget every per-process value, e.g. in a forked child."""
    for holder in PerProcess._every:
        holder.install(None)
