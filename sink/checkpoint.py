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

import contextlib
import os
from pathlib import Path
from typing import Final

import msgspec

from footfall.layout import check_topic

__all__ = ["STATE_DIR", "Checkpoint", "CheckpointStore", "fsync_dir"]

#: Name of the sink's own state directory inside the record directory (ignored by readers).
STATE_DIR: Final = "_footfall"

_ENCODER: Final = msgspec.json.Encoder()


class Checkpoint(msgspec.Struct, kw_only=True):
    """What is durably landed for one topic partition.

    Attributes:
        offset: last Kafka offset landed or otherwise settled (DLQ, parked); -1 if none.
        segment: path of the current segment relative to the record directory, or None.
        length: byte length of ``segment`` that is covered by this checkpoint.
        parked: offset ranges ``[first, last]`` (inclusive) parked on ``<topic>.retry``
            instead of landed here; the retry lander lands exactly those.
        landed_from: for a ``.retry`` partition: highest source offset landed, per source
            partition (so a batch parked twice lands once).
    """

    offset: int = -1
    segment: str | None = None
    length: int = 0
    parked: list[tuple[int, int]] = msgspec.field(default_factory=list)
    landed_from: dict[int, int] = msgspec.field(default_factory=dict)

    def is_parked(self, offset: int) -> bool:
        return any(first <= offset <= last for first, last in self.parked)


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

    def save(self, topic: str, partition: int, checkpoint: Checkpoint) -> None:
        """Replace the checkpoint atomically.

        Steps (order matters):
            1. write ``<partition>.json.tmp`` and fsync it;
            2. rename it over ``<partition>.json`` (atomic on POSIX);
            3. fsync the directory so the rename itself is durable.

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
        os.replace(tmp, path)
        if self.durable:
            fsync_dir(path.parent)
