"""Anomaly kinds: the codes ``scheduler.detection.screen`` writes in ``ScreenResult.kind``."""

from __future__ import annotations

#: Kind codes in ``ScreenResult.kind``; ``KIND_NAMES[code]`` is the name.
NORMAL, SPIKE, DIP, LEVEL_SHIFT, DRIFT, STUCK, DROPOUT, SEASONAL = range(8)
KIND_NAMES: tuple[str, ...] = (
    "normal",
    "spike",
    "dip",
    "level_shift",
    "drift",
    "stuck",
    "dropout",
    "seasonal",
)
KIND_CODES: dict[str, int] = {name: code for code, name in enumerate(KIND_NAMES)}
