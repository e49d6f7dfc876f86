"""Per-partition checkpoints: how far the files of one topic partition got.

``<record-directory>/_footfall/checkpoints/<topic>/<partition>.json`` holds the last
offset landed, the segment file it is in (relative path) and that file's byte length
at that point. It is replaced atomically (write temp, fsync, rename, fsync the
directory), so after any crash it is either the old or the new one, never a mix.

The checkpoint, not Kafka's committed offset, is the truth on recovery: Kafka commits
may be lost (the embedded broker keeps none across restarts) or lag behind.

Checkpoints are keyed by topic, not by consumer group: they describe the files, and
the files are per topic. Renaming a group therefore cannot cause re-landing.
"""

from __future__ import annotations

import bisect
import contextlib
import os
from pathlib import Path
from typing import Final

import msgspec

from footfall.layout import check_topic

__all__ = ["STATE_DIR", "Checkpoint", "CheckpointStore", "fsync_dir", "ranges_add", "ranges_contain"]

#: Name of the sink's own state directory inside the record directory (ignored by readers).
STATE_DIR: Final = "_footfall"

_ENCODER: Final = msgspec.json.Encoder()
_MAX: Final = 2**63


class Checkpoint(msgspec.Struct, kw_only=True):
    """What is durably landed for one topic partition.

    Attributes:
        offset: last Kafka offset landed or otherwise settled (DLQ, parked); -1 if none.
        segment: path of the current segment relative to the record directory, or None.
        length: byte length of ``segment`` that is covered by this checkpoint.
        parked: offset ranges ``[first, last]`` (inclusive) parked on ``<topic>.retry``
            instead of landed here; the retry lander lands exactly those.
        landed_from: for a ``.retry`` partition: source offsets landed, as ranges per source
            partition (so a record parked twice lands once, in whatever order copies arrive).
    """

    offset: int = -1
    segment: str | None = None
    length: int = 0
    parked: list[tuple[int, int]] = msgspec.field(default_factory=list)
    landed_from: dict[int, list[tuple[int, int]]] = msgspec.field(default_factory=dict)

    def is_parked(self, offset: int) -> bool:
        return ranges_contain(self.parked, offset)


def ranges_contain(ranges: list[tuple[int, int]], offset: int) -> bool:
    """True if ``offset`` lies in one of the inclusive, sorted, disjoint ``ranges``."""
    i = bisect.bisect_right(ranges, (offset, _MAX)) - 1
    return i >= 0 and ranges[i][0] <= offset <= ranges[i][1]


def ranges_add(ranges: list[tuple[int, int]], first: int, last: int) -> list[tuple[int, int]]:
    """``ranges`` with ``first..last`` added, merged (adjacent ranges join)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted([*ranges, (first, last)]):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


_DECODER: Final = msgspec.json.Decoder(Checkpoint)


def fsync_dir(path: Path) -> None:
    """fsync a directory so a file created or renamed in it survives a crash of the machine."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """Loads and atomically replaces checkpoints under ``<record-directory>/_footfall/checkpoints``."""

    def __init__(self, record_directory: Path, *, durable: bool = True) -> None:
        self.root = record_directory / STATE_DIR / "checkpoints"
        self.durable = durable

    def path(self, topic: str, partition: int) -> Path:
        return self.root / check_topic(topic) / f"{int(partition)}.json"

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        """The checkpoint, or None if this partition never wrote one."""
        try:
            data = self.path(topic, partition).read_bytes()
        except FileNotFoundError:
            return None
        return _DECODER.decode(data)

    def save(self, topic: str, partition: int, checkpoint: Checkpoint, *, sync_dir: bool = True) -> None:
        """Replace the checkpoint atomically.

        Steps (order matters):
            1. write ``<partition>.json.tmp`` and fsync it;
            2. rename it over ``<partition>.json`` (atomic on POSIX);
            3. fsync the directory so the rename itself is durable (with ``sync_dir=False``
               the caller does it, once for many partitions, before relying on it).

        Raises:
            OSError: the disk refused (the old checkpoint is still intact).
        """
        path = self.path(topic, partition)
        tmp = path.with_name(path.name + ".tmp")
        data = _ENCODER.encode(checkpoint)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            if self.durable:
                fsync_dir(path.parent.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.durable:
                os.fsync(fd)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        os.close(fd)
        tmp.replace(path)
        if self.durable and sync_dir:
            fsync_dir(path.parent)
