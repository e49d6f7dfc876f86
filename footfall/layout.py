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
from collections.abc import Iterator
from pathlib import Path
from typing import Final, NamedTuple

from footfall.errors import ConfigError

__all__ = [
    "MS_PER_DAY",
    "RETRY_SUFFIX",
    "SEGMENT_SUFFIX",
    "SegmentName",
    "check_topic",
    "date_dir",
    "day_of",
    "folder_of",
    "parse_segment_name",
    "partition_name",
    "segment_files",
    "segment_name",
    "segment_path",
]

SEGMENT_SUFFIX: Final = ".jsonl"
#: A topic of parked records (``<topic>.retry``); its records land in ``<topic>``'s folder, in
#: files named after the retry partition (``<topic>.retry+<p>+<offset>.jsonl``).
RETRY_SUFFIX: Final = ".retry"
#: Milliseconds in a UTC day: a record lands in the ``date=`` folder of ``timestamp // MS_PER_DAY``.
MS_PER_DAY: Final = 86_400_000
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


def partition_name(topic: str, partition: int) -> str:
    """``topic[partition]``: how logs and messages name a topic partition."""
    return f"{topic}[{partition}]"


def day_of(timestamp_ms: int) -> int:
    """The UTC day number (days since 1970-01-01) of an epoch-milliseconds timestamp."""
    return timestamp_ms // MS_PER_DAY


def folder_of(topic: str) -> str:
    """The topic folder a topic's segments land in: a ``<topic>.retry`` partition's go to ``<topic>``."""
    return topic.removesuffix(RETRY_SUFFIX)


def segment_files(
    record_directory: Path, topic: str | None = None, partition: int | None = None
) -> Iterator[tuple[Path, SegmentName]]:
    """Every segment file under ``record_directory``, with what its name says, in no set order.

    ``topic``/``partition`` narrow the search to the files named after that topic (and
    partition): ``topic="visit"`` gives the files of ``visit``'s own partitions, and
    ``topic="visit.retry"`` those landed from the retry topic (in the same ``visit`` folder).
    Without ``topic``, every segment of every folder, retry ones included. Files in the tree
    whose names are not segment names of their folder (a stray file, an editor's backup) are
    skipped: callers that must flag them look at the tree themselves. A partition's files
    are in log order when sorted by ``(name.generation, name.start_offset)``.
    """
    folder = folder_of(check_topic(topic)) if topic is not None else "*"
    prefix = f"{topic}+" if topic is not None else ""
    if partition is not None:
        prefix = f"{prefix or '*+'}{partition}+"
    for path in record_directory.glob(f"{folder}/date=*/{prefix}*{SEGMENT_SUFFIX}"):
        name = parse_segment_name(path.name)
        if name is None or folder_of(name.topic) != path.parent.parent.name:
            continue
        if (topic is None or name.topic == topic) and (partition is None or name.partition == partition):
            yield path, name
