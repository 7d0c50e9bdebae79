"""Given devices rejoining the held-screening sample, what the producer keeps for them."""

from __future__ import annotations

import numpy as np

from ingest.held_rejoin import Held, RejoinBuffer
from ingest.screened_marks import ScreenedMarks
from scheduler.registry import generate_registry


def held(rows: list[int], ts: list[float]) -> Held:
    r = np.asarray(rows, dtype=np.int64)
    return (r, r.astype(np.uint64), np.asarray(ts), np.zeros((r.size, 1)), np.ones(r.size, int))


def test_room_goes_to_devices_already_rejoining_and_a_reading_is_kept_once() -> None:
    buffer = RejoinBuffer(n_rows=10, max_readings=4)
    # Given device 1 rejoining with three readings kept
    kept = buffer.keep(0, held([1, 1, 1], [1.0, 2.0, 3.0]), np.ones(3, dtype=np.bool_))
    assert kept.all() and buffer.size == 3
    # When device 2 (new) and device 1 offer one reading each with room for one
    kept = buffer.keep(0, held([2, 1], [4.0, 4.0]), np.ones(2, dtype=np.bool_))
    # Then device 1 keeps its reading and device 2 does not start rejoining
    assert kept.tolist() == [False, True] and buffer.size == 4
    assert buffer.rejoining.tolist()[1:3] == [True, False]
    # And a kept reading handed back again counts as kept without taking room twice
    assert buffer.keep(0, held([1], [2.0]), np.ones(1, dtype=np.bool_)).all()
    assert buffer.size == 4


def test_kept_readings_are_ready_once_the_older_held_ones_are_admitted() -> None:
    reg = generate_registry(10, seed=1)
    marks = ScreenedMarks(reg)
    buffer = RejoinBuffer(n_rows=len(reg))
    rows = np.array([1], dtype=np.int64)
    # Given device 1 with a reading held unscreened at t=5, rejoining with t=6 and 7 kept
    marks.held_unscreened(rows, np.array([5.0]))
    buffer.keep(0, held([1, 1], [7.0, 6.0]), np.ones(2, dtype=np.bool_))
    # Then nothing is ready while t=5 waits
    assert buffer.ready(0, marks) is None
    # When t=5 and t=6 are admitted (t=6 is screened with its routine batch then)
    marks.admitted(np.array([1, 1], dtype=np.int64), np.array([5.0, 6.0]))
    ready = buffer.ready(0, marks)
    # Then only t=7 is left to screen, and the device is no longer rejoining
    assert ready is not None and ready[2].tolist() == [7.0]
    assert not buffer.rejoining[1] and buffer.size == 0
