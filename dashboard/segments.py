"""Segment discovery: which landed files the fold reads, and which of them may still grow."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dashboard.schema import ReportKind
from footfall.layout import RETRY_SUFFIX, segment_files

__all__ = ["SegmentFile", "list_segments"]


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentFile:
    """A segment file found on disk."""

    path: Path
    topic: str
    kind: ReportKind
    partition: int
    start_offset: int
    size: int
    closed: bool  # a later segment of the same topic+partition exists
    generation: int = 0  # the partition's log generation (footfall.layout)


def list_segments(record_directory: Path, topics: dict[str, ReportKind]) -> list[SegmentFile]:
    """Every segment file of ``topics`` (topic -> report kind), with its closed flag, sorted
    by (topic, partition, generation, start offset).

    A topic's files include those the sink landed from its ``<topic>.retry`` partitions (parked
    records, in the same folder, in files named after the retry partition): their records are
    landed nowhere else. ``SegmentFile.topic`` is the file's own topic, so a retry partition's
    files are ordered apart from the partition of the same number.

    ``_``-prefixed directories (the sink's own state) are never listed: they are not topics.
    """
    found: list[tuple[SegmentFile, tuple[int, int]]] = []
    for file_topic, kind in [(t + suffix, k) for t, k in topics.items() for suffix in ("", RETRY_SUFFIX)]:
        for path, name in segment_files(record_directory, file_topic):
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # removed between the listing and stat
                continue
            segment = SegmentFile(
                path, file_topic, kind, name.partition, name.start_offset, size, False, name.generation
            )
            found.append((segment, (name.generation, name.start_offset)))
    # A partition's files are in log order by (generation, start offset); only the last may grow.
    newest: dict[tuple[str, int], tuple[int, int]] = {}
    for segment, position in found:
        key = (segment.topic, segment.partition)
        newest[key] = max(newest.get(key, position), position)
    return sorted(
        (dataclasses.replace(s, closed=position < newest[(s.topic, s.partition)]) for s, position in found),
        key=lambda s: (s.topic, s.partition, s.generation, s.start_offset),
    )
