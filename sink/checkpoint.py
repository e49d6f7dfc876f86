"""Per-partition checkpoints: how far the files of one topic partition got.

``<record-directory>/_footfall/checkpoints/<topic>/<partition>.json`` holds the last
offset landed, the segment file it is in (relative path), that file's byte length and
line count at that point, a CRC of its last line, and the partition's log *generation*
(see :mod:`footfall.layout`). It is replaced atomically (write temp, fsync, rename,
fsync the directory), so after any crash it is either the old or the new one, never a mix.

Loading validates it (:meth:`CheckpointStore.load`): a file that is not a checkpoint, or
whose fields contradict each other, raises :class:`~sink.errors.CheckpointError` naming
the file and the partition; the writer then checks it against the segment file itself.
A checkpoint is never guessed at, defaulted or repaired: that would lose or duplicate.

The checkpoint, not Kafka's committed offset, is the truth on recovery: Kafka commits
may be lost (the embedded broker keeps none across restarts) or lag behind.

Checkpoints are keyed by topic, not by consumer group: they describe the files, and
the files are per topic. Renaming a group therefore cannot cause re-landing.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import zlib
from pathlib import Path, PurePosixPath
from typing import Final

import msgspec

from footfall.layout import check_topic, parse_segment_name, partition_name
from sink.errors import CheckpointError

__all__ = [
    "STATE_DIR",
    "Checkpoint",
    "CheckpointStore",
    "fsync_dir",
    "line_crc",
    "ranges_add",
    "ranges_contain",
]

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
        lines: records (lines) in ``segment`` up to ``length``; None in checkpoints of
            older sinks (then not checked).
        last_line_crc: CRC-32 of the last line of ``segment`` before ``length`` (without its
            newline), so a length that points at another line end is caught; None as above.
        last_line_offset: the Kafka offset of the record that last line is the value of; on
            assignment the log's record at that offset must have the same CRC, or the log is
            another one than the files were landed from (a topic created again).
        generation: the partition's log generation; its segments of this generation are
            named with it (:func:`footfall.layout.segment_name`), earlier ones stay as they are.
        parked: offset ranges ``[first, last]`` (inclusive) parked on ``<topic>.retry``
            instead of landed here; the retry lander lands exactly those.
        landed_from: for a ``.retry`` partition: source offsets landed, as ranges per source
            partition (so a record parked twice lands once, in whatever order copies arrive).
    """

    offset: int = -1
    segment: str | None = None
    length: int = 0
    lines: int | None = None
    last_line_crc: int | None = None
    last_line_offset: int | None = None
    generation: int = 0
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


class _CheckpointFile(msgspec.Struct, forbid_unknown_fields=True):
    """The on-disk schema: ``offset``, ``segment`` and ``length`` must be present (``{}`` is
    not the empty state: that is ``{"offset": -1, "segment": null, "length": 0, ...}``)."""

    offset: int
    segment: str | None
    length: int
    lines: int | None = None
    last_line_crc: int | None = None
    last_line_offset: int | None = None
    generation: int = 0
    parked: list[tuple[int, int]] = msgspec.field(default_factory=list)
    landed_from: dict[int, list[tuple[int, int]]] = msgspec.field(default_factory=dict)


_DECODER: Final = msgspec.json.Decoder(_CheckpointFile)


def line_crc(line: bytes | bytearray | memoryview) -> int:
    """CRC-32 of one line (without its newline), as kept in :attr:`Checkpoint.last_line_crc`."""
    return zlib.crc32(line)


def _ranges_ok(ranges: list[tuple[int, int]], upto: int | None) -> bool:
    """Sorted, disjoint, each ``first <= last``, all within ``0..upto`` (if given)."""
    prev = -1
    for first, last in ranges:
        if first <= prev or last < first or (upto is not None and last > upto):
            return False
        prev = last
    return True


def _contradiction(c: _CheckpointFile, topic: str, partition: int) -> str | None:
    """Why the fields of a decoded checkpoint cannot be true together (None if they can)."""
    if c.offset < -1:
        return f"offset {c.offset} is negative"
    if c.length < 0 or (c.lines is not None and c.lines < 0) or c.generation < 0:
        return "length, lines and generation must be >= 0"
    if not _ranges_ok(c.parked, c.offset):
        return "parked ranges are not sorted, disjoint ranges up to the offset"
    if any(not _ranges_ok(r, None) or p < 0 for p, r in c.landed_from.items()):
        return "landed_from ranges are not sorted, disjoint ranges"
    if c.segment is None:
        if c.length or c.lines or c.last_line_offset is not None:
            return "length/lines/last_line_offset given without a segment"
        return None
    if c.offset < 0:
        return "a segment without any offset landed"
    rel = PurePosixPath(c.segment)
    if rel.is_absolute() or ".." in rel.parts or len(rel.parts) != 3:
        return f"segment {c.segment!r} is not <topic>/date=YYYY-MM-DD/<file> inside the record directory"
    name = parse_segment_name(rel.name)
    if name is None or name.topic != topic or name.partition != partition:
        return f"segment {c.segment!r} is not a segment file of this partition"
    if name.generation != c.generation:
        return f"segment {c.segment!r} is of generation {name.generation}, the checkpoint of {c.generation}"
    if name.start_offset > c.offset:
        return f"segment {c.segment!r} starts after the checkpoint's offset {c.offset}"
    if c.lines is not None and name.start_offset + c.lines - 1 > c.offset:
        # Each line is one offset (DLQ'd or parked offsets have none): more lines than
        # offsets means the offset is too small (records would be landed again).
        return f"{c.lines} lines from offset {name.start_offset} do not fit below offset {c.offset}"
    if c.length == 0 and c.lines:
        return "lines without bytes"
    if c.last_line_offset is not None and not name.start_offset <= c.last_line_offset <= c.offset:
        return f"last_line_offset {c.last_line_offset} is outside the segment's offsets"
    return None


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
        """The checkpoint, or None if this partition never wrote one.

        Raises:
            CheckpointError: the file is not a valid checkpoint of this partition (not a
                regular file, not JSON, a field missing or of the wrong type, fields that
                contradict each other). The file is left as it is.
            OSError: the disk refused the read (retriable).
        """
        path = self.path(topic, partition)
        where = partition_name(check_topic(topic), int(partition))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise CheckpointError(path, where, "is a directory, not a checkpoint file") from None
        try:
            c = _DECODER.decode(data)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            reason = "is empty" if not data.strip() else f"is not a checkpoint: {exc}"
            raise CheckpointError(path, where, reason) from None
        problem = _contradiction(c, topic, int(partition))
        if problem is not None:
            raise CheckpointError(path, where, problem)
        return Checkpoint(
            offset=c.offset,
            segment=c.segment,
            length=c.length,
            lines=c.lines,
            last_line_crc=c.last_line_crc,
            last_line_offset=c.last_line_offset,
            generation=c.generation,
            parked=c.parked,
            landed_from=c.landed_from,
        )

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
