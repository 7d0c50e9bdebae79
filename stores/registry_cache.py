"""A process-local registry snapshot, reloaded when the stored version changes."""

from __future__ import annotations

import time
from collections.abc import Callable

from scheduler import defaults
from scheduler.errors import ConfigError
from scheduler.registry import Registry
from stores.protocols import StateStore


class RegistryCache:
    """The snapshot a process classifies and screens with: checked against the stored
    version at most every ``refresh_s``, or at once by ``refresh``."""

    def __init__(
        self,
        store: StateStore,
        refresh_s: float = defaults.REGISTRY_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.clock = clock
        self._snapshot: Registry | None = None
        self._checked_at = float("-inf")

    def get(self) -> Registry:
        now = self.clock()
        if self._snapshot is None or now - self._checked_at >= self.refresh_s:
            self._checked_at = now
            version = self.store.registry_version()
            if self._snapshot is None or version != self._snapshot.version:
                self._snapshot = self._loaded()
        return self._snapshot

    def refresh(self) -> Registry:
        """Reload the snapshot now: a store found the registry changed under it
        (``RegistryChanged``), so waiting out ``refresh_s`` would only fail again."""
        self._checked_at = self.clock()
        self._snapshot = self._loaded()
        return self._snapshot

    def _loaded(self) -> Registry:
        loaded = self.store.load_registry()
        if loaded is None:
            raise ConfigError(
                "no device registry stored: run `iotsched registry generate` or "
                "`iotsched registry load FILE.csv` first"
            )
        return loaded
