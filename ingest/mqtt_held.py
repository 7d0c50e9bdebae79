"""Held: MQTT messages the bridge keeps unacknowledged because ingest pushed back readings.

Pushed-back readings are parked in Redis when the bridge has a parked-readings store
(``ingest.mqtt_parking``); without one, or while Redis cannot take the write, they stay
here with their messages unacknowledged, as flow control by the session's receive
window. They are never premium (ingest never pushes premium back), and they are offered
again only once one of their regions takes readings: re-offering a large hold to a
closed region would spend a bridge cycle while premium readings wait behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

#: How often held readings' regions are looked at again (``Producer.closed``).
PUSHED_BACK_WAIT_S = 0.05


@dataclass
class HeldMessage:
    """A message not yet acknowledged: its readings ingest pushed back, to offer again."""

    mid: int
    qos: int
    device_id: npt.NDArray[np.uint64]
    ts: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    offered_ts: npt.NDArray[np.float64]
    others: list[Any]
    #: The region each held reading is bound for: offered again once one of them is open.
    regions: npt.NDArray[np.intp]


@dataclass
class MessageRun:
    """A run of messages' readings as offered to ingest together: rows (``owner``: the
    message, an index in ``messages``, of each) and others, readings for the producer's
    per-reading checks (``other_owner``)."""

    messages: list[tuple[int, int]]
    owner: npt.NDArray[np.intp]
    device_id: npt.NDArray[np.uint64]
    ts: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    offered_ts: npt.NDArray[np.float64]
    others: list[Any]
    other_owner: list[int]


@dataclass
class PushedBack:
    """What ingest pushed back of a ``MessageRun`` (or the bridge deferred): rows
    (positions in the run's columns) and others (positions in its others), each with the
    region code it is bound for."""

    rows: npt.NDArray[np.intp]
    row_regions: npt.NDArray[np.intp]
    others: npt.NDArray[np.intp]
    other_regions: npt.NDArray[np.intp]


class Held:
    def __init__(self) -> None:
        self._messages: list[HeldMessage] = []
        self._retry_ts = 0.0

    def __bool__(self) -> bool:
        return bool(self._messages)

    def due(self, now: float) -> bool:
        return bool(self._messages) and now >= self._retry_ts

    def hold(self, run: MessageRun, back: PushedBack, now: float) -> list[tuple[int, int]]:
        """Keep each message of ``run`` with its pushed-back readings; returns the messages
        with none, to acknowledge."""
        rows_of: dict[int, list[int]] = {}  # message → its pushed-back rows (positions)
        for k, i in enumerate(run.owner[back.rows].tolist()):
            rows_of.setdefault(i, []).append(k)
        others_of: dict[int, list[int]] = {}
        for k, j in enumerate(back.others.tolist()):
            others_of.setdefault(run.other_owner[j], []).append(k)
        free: list[tuple[int, int]] = []
        for i, (mid, qos) in enumerate(run.messages):
            if i not in rows_of and i not in others_of:
                free.append((mid, qos))
                continue
            mine = np.asarray(rows_of.get(i, []), dtype=np.intp)
            mine_others = others_of.get(i, [])
            regions = np.concatenate((back.row_regions[mine], back.other_regions[mine_others]))
            kept = [run.others[back.others[k]] for k in mine_others]
            rows = back.rows[mine]
            cols = run.device_id[rows], run.ts[rows], run.values[rows], run.offered_ts[rows]
            self._messages.append(HeldMessage(mid, qos, *cols, kept, regions))
        self._retry_ts = now + PUSHED_BACK_WAIT_S
        return free

    def take_open(self, closed: npt.NDArray[np.bool_] | None, now: float) -> MessageRun | None:
        """Held messages with a reading bound for a region that takes readings (``closed``:
        per region code; None: every region open), gathered; None when there is none."""
        if closed is None:
            held, self._messages = self._messages, []
        else:
            held = [h for h in self._messages if not closed[h.regions].all()]
            self._messages = [h for h in self._messages if closed[h.regions].all()]
            self._retry_ts = now + PUSHED_BACK_WAIT_S
        if not held:
            return None
        return MessageRun(
            [(h.mid, h.qos) for h in held],
            np.repeat(np.arange(len(held), dtype=np.intp), [h.device_id.size for h in held]),
            np.concatenate([h.device_id for h in held]),
            np.concatenate([h.ts for h in held]),
            np.concatenate([h.values for h in held]),
            np.concatenate([h.offered_ts for h in held]),
            [o for h in held for o in h.others],
            [i for i, h in enumerate(held) for _ in h.others],
        )
