"""Settings of ``footfall sink`` (flags, env vars ``FOOTFALL_SINK_*``, defaults).

Precedence: CLI flag > env var > default; ``--brokers`` reads ``FOOTFALL_BROKERS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from footfall.errors import ConfigError, StartupError
from footfall.kafka import parse_brokers
from footfall.layout import RETRY_SUFFIX, check_topic
from footfall.preflight import check_directory
from footfall.reports import ReportType
from footfall.settings import LogLevel, parse_settings

__all__ = [
    "ENV_PREFIX",
    "SinkSettings",
    "check_record_directory",
    "dlq_topic",
    "parse_groups",
    "parse_sink_settings",
    "parse_topic_types",
    "retry_topic",
]

ENV_PREFIX: Final = "FOOTFALL_SINK_"
DLQ_SUFFIX: Final = ".dlq"

FsyncPolicy = Literal["always", "commit", "never"]


def retry_topic(topic: str) -> str:
    """``<topic>.retry``: where batches that could not be written are parked."""
    return topic + RETRY_SUFFIX


def dlq_topic(topic: str) -> str:
    """``<topic>.dlq``: where records that are not valid reports go."""
    return topic + DLQ_SUFFIX


class SinkSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one sink instance (supervisor and workers) is configured with."""

    brokers: Annotated[
        str, Meta(description="Kafka bootstrap servers host:port[,host:port]", extra={"env": "FOOTFALL_BROKERS"})
    ] = "127.0.0.1:9092"
    groups: Annotated[
        list[str],
        Meta(
            description="consumer group and topic as GROUP:TOPIC[:TYPE]; each worker joins every group. TYPE "
            "(visit or activity) is the report type of records without an ff-type header (topics of the "
            "original web-service); without it, the type the topic is named after",
            min_length=1,
        ),
    ]
    concurrent_count: Annotated[int, Meta(ge=1, le=256, description="worker processes")] = 2
    record_directory: Annotated[str, Meta(min_length=1, description="root directory of the landed files")]
    metrics_host: Annotated[str, Meta(description="address of /healthz /readyz /metrics")] = "127.0.0.1"
    metrics_port: Annotated[int, Meta(ge=0, le=65535, description="port of /healthz /readyz /metrics (0: any)")] = 8082
    flush_interval: Annotated[
        float,
        Meta(
            gt=0,
            le=3600,
            description="seconds: the longest a record waits before it is flushed, fsynced "
            "and committed (also when traffic stops)",
        ),
    ] = 0.5
    buffer_bytes: Annotated[int, Meta(ge=1024, description="per-partition write buffer; written out when full")] = (
        1 << 20
    )
    segment_bytes: Annotated[int, Meta(ge=1024, description="rotate a segment file at this size")] = 128 << 20
    segment_age: Annotated[float, Meta(gt=0, description="seconds: rotate a segment file this old")] = 3600.0
    fsync: Annotated[
        FsyncPolicy, Meta(description="always: after every write; commit: before offsets are committed; never")
    ] = "commit"
    poison_check: Annotated[
        bool, Meta(description="validate every value as a report; invalid ones go to <topic>.dlq")
    ] = True
    write_retry_timeout: Annotated[
        float,
        Meta(
            ge=0,
            description="seconds of failed writes (disk full, I/O error) before a batch is parked on <topic>.retry",
        ),
    ] = 30.0
    gap_timeout: Annotated[
        float,
        Meta(
            ge=0,
            description="seconds an offset gap on a partition may persist (refetched meanwhile) before the sink "
            "accepts it as a real hole (compaction, transaction markers), logs and counts it",
        ),
    ] = 10.0
    side_topic_partitions: Annotated[int, Meta(ge=1, description="partitions of <topic>.retry/.dlq if created")] = 1
    replication_factor: Annotated[int, Meta(ge=1, description="replication factor of <topic>.retry/.dlq")] = 1
    session_timeout: Annotated[float, Meta(ge=1, le=300, description="seconds: consumer group session timeout")] = 10.0
    fetch_max_bytes: Annotated[int, Meta(ge=65536, description="bytes one fetch may return per partition")] = 4 << 20
    max_poll_records: Annotated[
        int,
        Meta(
            ge=0,
            description="records handled per poll at most (0: everything fetched); small polls keep the "
            "records in the CPU cache between parsing, checking and writing",
        ),
    ] = 2000
    stall_timeout: Annotated[
        float,
        Meta(
            ge=1,
            le=3600,
            description="seconds a held partition with lag may go without a fetched record before its worker "
            "is restarted (a dead fetch task restarts it at the next check)",
        ),
    ] = 30.0
    lock_timeout: Annotated[
        float,
        Meta(
            ge=0,
            description="seconds a partition may wait for its file lock (held by another process on this "
            "machine) before /readyz turns false and an error is logged; it keeps waiting, the other "
            "partitions keep landing",
        ),
    ] = 30.0
    shutdown_timeout: Annotated[float, Meta(gt=0, description="seconds to drain (flush, fsync, commit) on SIGTERM")] = (
        15.0
    )
    broker_timeout: Annotated[float, Meta(gt=0, description="seconds to wait for Kafka at start-up")] = 30.0
    log_level: Annotated[LogLevel, Meta(description="log level")] = "info"

    @property
    def record_path(self) -> Path:
        return Path(self.record_directory)

    def group_topics(self) -> dict[str, list[str]]:
        """``{group: [topic, ...]}`` from ``--groups`` (validated by :func:`parse_groups`)."""
        return parse_groups(self.groups)

    def topic_types(self) -> dict[str, ReportType]:
        """``{topic: report type}`` for the topics ``--groups`` gave a TYPE."""
        return parse_topic_types(self.groups)


def _split_spec(spec: str) -> tuple[str, str, ReportType | None]:
    """``GROUP:TOPIC[:TYPE]`` -> (group, topic, type). Kafka topic names cannot contain ``:``."""
    parts = [part.strip() for part in spec.split(":")]
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ConfigError(
            f"--groups (env {ENV_PREFIX}GROUPS): {spec!r} is not GROUP:TOPIC or GROUP:TOPIC:TYPE "
            "(e.g. sink:visit, or sink:clicks:visit)"
        )
    kind: ReportType | None = None
    if len(parts) == 3:
        try:
            kind = ReportType(parts[2])
        except ValueError:
            names = ", ".join(t.value for t in ReportType)
            raise ConfigError(f"--groups: {spec!r}: report type {parts[2]!r} is not one of {names}") from None
    return parts[0], parts[1], kind


def parse_topic_types(specs: list[str]) -> dict[str, ReportType]:
    """``{topic: type}`` of the ``GROUP:TOPIC:TYPE`` specs (validated by :func:`parse_groups`)."""
    out: dict[str, ReportType] = {}
    for spec in specs:
        _group, topic, kind = _split_spec(spec)
        if kind is not None:
            out[topic] = kind
    return out


def parse_groups(specs: list[str]) -> dict[str, list[str]]:
    """Parse ``GROUP:TOPIC[:TYPE]`` specs into ``{group: [topics]}``.

    Raises:
        ConfigError: malformed spec, unknown report type, unsafe topic name, a
            ``.retry``/``.dlq`` topic, one topic in two groups (both would land it in the
            same files: duplicates), or one topic given two report types.
    """
    out: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    kinds: dict[str, ReportType] = {}
    for spec in specs:
        group, topic, kind = _split_spec(spec)
        if kind is not None and kinds.setdefault(topic, kind) is not kind:
            raise ConfigError(
                f"--groups: topic {topic!r} is given types {kinds[topic].value!r} and {kind.value!r}; give it one"
            )
        try:
            check_topic(topic)
        except ConfigError as exc:
            raise ConfigError(f"--groups: {exc}") from exc
        if topic.endswith((RETRY_SUFFIX, DLQ_SUFFIX)):
            raise ConfigError(f"--groups: {topic!r}: the sink consumes <topic>.retry itself; name the base topic")
        if topic in owner and owner[topic] != group:
            raise ConfigError(
                f"--groups: topic {topic!r} is in groups {owner[topic]!r} and {group!r}; both would write the same "
                "files (duplicates). Give each topic one group"
            )
        owner[topic] = group
        topics = out.setdefault(group, [])
        if topic not in topics:
            topics.append(topic)
    return out


def parse_sink_settings(argv: list[str] | None, environ: dict[str, str] | None = None) -> SinkSettings:
    """Parse and check the settings.

    Raises:
        ConfigError: a bad flag/env value, bad ``--groups``, unusable brokers or record directory.
    """
    settings = parse_settings(
        SinkSettings,
        argv,
        prog="footfall sink",
        description="Kafka -> append-only segment files, exactly once (see docs/architecture.md).",
        env_prefix=ENV_PREFIX,
        environ=environ,
    )
    parse_brokers(settings.brokers)
    parse_groups(settings.groups)
    check_record_directory(settings.record_path)
    return settings


def check_record_directory(path: Path) -> None:
    """Create the record directory if missing and prove it takes a write (one byte, fsynced).

    Raises:
        StartupError: it is not a directory, cannot be created, or refuses a write
            (read-only, permission denied, full).
    """
    if path.exists() and not path.is_dir():
        raise StartupError(f"--record-directory: {str(path)!r} is not a directory; pick a directory")
    check_directory(path, "--record-directory")
