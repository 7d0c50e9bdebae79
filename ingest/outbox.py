"""The producer's outbox: batches that could not be published yet, kept in order until they are.

While the broker is away (restart, outage, a network cut) the producer hands
its due micro-batches here instead of dropping them, and replays them oldest
first when the broker answers again. ``SpoolOutbox`` is an append-only spool on
disk: each ``append`` writes its batches and fsyncs once (a group commit), so
what it holds survives the producer's own restart; ``MemoryOutbox`` is the
same in memory, for tests and the embedded demo.

Spool layout (one directory per producer): numbered segment files of records
``<u32 length><u32 crc32><msgpack of the encoded batch>``, and a ``cursor``
file naming the first record not yet published (``segment offset``), replaced
atomically. A torn record at the tail (a crash mid-write) fails its CRC and is
cut off on open: it was never reported as accepted.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from pathlib import Path
from typing import Protocol

import msgpack

from scheduler import defaults
from scheduler.codec import decode_batch, encode_batch
from scheduler.errors import ConfigError
from scheduler.model import Batch

_HEADER = struct.Struct("<II")
#: A segment is closed and a new one started past this size; consumed segments are deleted.
SEGMENT_MAX_BYTES = defaults.OUTBOX_SEGMENT_MAX_BYTES


class Outbox(Protocol):
    @property
    def held_readings(self) -> int: ...

    def __len__(self) -> int: ...

    def append(self, batches: list[Batch]) -> None:
        """Keep ``batches`` after everything held; durable when this returns."""

    def peek(self, limit: int) -> list[Batch]:
        """The oldest ``limit`` batches held, oldest first, without removing them."""

    def release(self, count: int) -> None:
        """The oldest ``count`` batches were published: forget them."""


class MemoryOutbox:
    """An outbox in process memory: survives a broker outage, not a producer restart."""

    def __init__(self) -> None:
        self._batches: deque[Batch] = deque()
        self.held_readings = 0

    def __len__(self) -> int:
        return len(self._batches)

    def append(self, batches: list[Batch]) -> None:
        self._batches.extend(batches)
        self.held_readings += sum(len(b) for b in batches)

    def peek(self, limit: int) -> list[Batch]:
        return [self._batches[i] for i in range(min(limit, len(self._batches)))]

    def release(self, count: int) -> None:
        for _ in range(count):
            self.held_readings -= len(self._batches.popleft())


class SpoolOutbox:
    """An outbox in an append-only spool on disk; reopening the directory resumes it."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"outbox directory {self.dir} cannot be created: {exc}") from exc
        # (batch, segment, offset just past its record), oldest first.
        self._held: deque[tuple[Batch, int, int]] = deque()
        self.held_readings = 0
        self._segment, self._offset = self._load()
        self._file = open(self._path(self._segment), "ab")  # noqa: SIM115 - kept open for appends

    def __len__(self) -> int:
        return len(self._held)

    def append(self, batches: list[Batch]) -> None:
        if not batches:
            return
        if self._offset >= SEGMENT_MAX_BYTES:
            self._roll()
        for b in batches:
            body = msgpack.packb(encode_batch(b), use_bin_type=True)
            self._file.write(_HEADER.pack(len(body), zlib.crc32(body)))
            self._file.write(body)
            self._offset += _HEADER.size + len(body)
            self._held.append((b, self._segment, self._offset))
            self.held_readings += len(b)
        self._file.flush()
        os.fsync(self._file.fileno())

    def peek(self, limit: int) -> list[Batch]:
        return [self._held[i][0] for i in range(min(limit, len(self._held)))]

    def release(self, count: int) -> None:
        if count <= 0:
            return
        for _ in range(count):
            batch, segment, offset = self._held.popleft()
            self.held_readings -= len(batch)
        self._write_cursor(segment, offset)
        for seg in self._segments():
            if seg < segment:
                self._path(seg).unlink(missing_ok=True)

    def close(self) -> None:
        self._file.close()

    # --- on disk ---------------------------------------------------------------------

    def _path(self, segment: int) -> Path:
        return self.dir / f"{segment:012d}.spool"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.spool") if p.stem.isdigit())

    def _write_cursor(self, segment: int, offset: int) -> None:
        tmp = self.dir / "cursor.tmp"
        with open(tmp, "w") as f:
            f.write(f"{segment} {offset}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / "cursor")

    def _load(self) -> tuple[int, int]:
        """Read back what was held before a restart; returns where appends continue."""
        cursor_seg, cursor_off = 0, 0
        cursor = self.dir / "cursor"
        if cursor.exists():
            parts = cursor.read_text().split()
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise ConfigError(f"outbox cursor {cursor} is corrupt: {cursor.read_text()!r}")
            cursor_seg, cursor_off = int(parts[0]), int(parts[1])
        segments = [s for s in self._segments() if s >= cursor_seg]
        if not segments:
            # Start a fresh segment: the cursor's offset belongs to the old one.
            return cursor_seg + 1, 0
        end = 0
        for seg in segments:
            start = cursor_off if seg == cursor_seg else 0
            end = self._read_segment(seg, start)
        return segments[-1], end

    def _read_segment(self, segment: int, start: int) -> int:
        path = self._path(segment)
        data = path.read_bytes()
        pos = start
        while pos + _HEADER.size <= len(data):
            size, crc = _HEADER.unpack_from(data, pos)
            body = data[pos + _HEADER.size : pos + _HEADER.size + size]
            if len(body) < size or zlib.crc32(body) != crc:
                break
            pos += _HEADER.size + size
            batch = decode_batch(msgpack.unpackb(body, raw=False))
            self._held.append((batch, segment, pos))
            self.held_readings += len(batch)
        if pos < len(data):
            # A torn tail from a crash mid-append: never fsynced, never reported accepted.
            with open(path, "r+b") as f:
                f.truncate(max(pos, start))
                os.fsync(f.fileno())
        return max(pos, start)

    def _roll(self) -> None:
        self._file.close()
        self._segment += 1
        self._offset = 0
        self._file = open(self._path(self._segment), "ab")  # noqa: SIM115
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
