"""What a task needs from its process: the state store, created once per process.

Real workers build a Redis store from settings; the embedded runner installs
an in-memory one before starting its in-process worker.
"""

from __future__ import annotations

import threading

from scheduler.settings import Settings
from stores.keys import Keys
from stores.protocols import StateStore

_lock = threading.Lock()
_store: StateStore | None = None
_settings: Settings | None = None


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def install(store: StateStore, cfg: Settings | None = None) -> None:
    """Use this store (and settings) for every task in this process."""
    global _store, _settings
    with _lock:
        _store = store
        if cfg is not None:
            _settings = cfg


def store() -> StateStore:
    global _store
    if _store is None:
        with _lock:
            if _store is None:
                from stores.redis_state import RedisStateStore

                cfg = settings()
                _store = RedisStateStore.from_url(cfg.redis_url, Keys(cfg.key_prefix))
    return _store


def reset() -> None:
    """Forget the store, e.g. in a forked child that must not share its parent's sockets."""
    global _store
    with _lock:
        _store = None
