"""The record directory's layout, shared by the sink, bench verify and dashboard.

``<record-directory>/<topic>/date=YYYY-MM-DD/<topic>+<partition>+<startOffset:020d>.jsonl``

A partition's log can start over (a topic deleted and created again, the memory-only embedded
broker restarted): the sink then lands the new log under a new *generation*, in files named
``<topic>+<partition>+g<generation>+<startOffset:020d>.jsonl``, so the earlier files are never
overwritten or appended to. Generation 0 keeps the plain name. A partition's files are in log
order when sorted by (generation, start offset).

Topic names become path components, so they are checked here first: Kafka's own
rule (``[a-zA-Z0-9._-]{1,249}``) minus ``.`` and ``..``, which would escape the directory.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Final, NamedTuple

from footfall.errors import ConfigError

__all__ = [
    "SEGMENT_SUFFIX",
    "SegmentName",
    "check_topic",
    "date_dir",
    "parse_segment_name",
    "segment_name",
    "segment_path",
]

SEGMENT_SUFFIX: Final = ".jsonl"
_TOPIC_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SEGMENT_RE: Final = re.compile(
    r"(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?:g(?P<generation>\d+)\+)?(?P<offset>\d{20})\.jsonl"
)


class SegmentName(NamedTuple):
    """What a segment file's name says: its topic, partition, first offset and log generation."""

    topic: str
    partition: int
    start_offset: int
    generation: int = 0


def check_topic(topic: str) -> str:
    """Return ``topic`` if it is a legal Kafka topic name that is safe as a path component.

    Raises:
        ConfigError: the name is empty, too long, has characters outside
            ``[A-Za-z0-9._-]``, or is ``.``/``..``.
    """
    if topic in {".", ".."} or not _TOPIC_RE.fullmatch(topic):
        raise ConfigError(f"invalid topic name {topic!r}: use 1-249 characters from [A-Za-z0-9._-], not '.' or '..'")
    return topic


def date_dir(record_directory: Path, topic: str, day: dt.date) -> Path:
    """``<record-directory>/<topic>/date=YYYY-MM-DD``."""
    return record_directory / check_topic(topic) / f"date={day.isoformat()}"


def segment_name(topic: str, partition: int, start_offset: int, generation: int = 0) -> str:
    """``<topic>+<partition>+<startOffset:020d>.jsonl``, or with ``+g<generation>`` before the offset."""
    gen = f"g{generation}+" if generation else ""
    return f"{check_topic(topic)}+{partition}+{gen}{start_offset:020d}{SEGMENT_SUFFIX}"


def segment_path(
    record_directory: Path, topic: str, day: dt.date, partition: int, start_offset: int, generation: int = 0
) -> Path:
    """Full path of a segment file."""
    return date_dir(record_directory, topic, day) / segment_name(topic, partition, start_offset, generation)


def parse_segment_name(name: str) -> SegmentName | None:
    """Parse a segment file name; ``None`` for any other file."""
    m = _SEGMENT_RE.fullmatch(name)
    if m is None:
        return None
    return SegmentName(m["topic"], int(m["partition"]), int(m["offset"]), int(m["generation"] or 0))
