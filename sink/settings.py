"""Settings of ``footfall sink`` (flags, env vars ``FOOTFALL_SINK_*``, defaults).

Precedence: CLI flag > env var > default; ``--brokers`` reads ``FOOTFALL_BROKERS``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from footfall.errors import ConfigError
from footfall.kafka import parse_brokers
from footfall.layout import check_topic
from footfall.settings import parse_settings

__all__ = [
    "ENV_PREFIX",
    "SinkSettings",
    "check_record_directory",
    "dlq_topic",
    "parse_groups",
    "parse_sink_settings",
    "retry_topic",
]

ENV_PREFIX: Final = "FOOTFALL_SINK_"
RETRY_SUFFIX: Final = ".retry"
DLQ_SUFFIX: Final = ".dlq"

FsyncPolicy = Literal["always", "commit", "never"]
LogLevel = Literal["debug", "info", "warning", "error"]


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
        Meta(description="consumer group and topic as GROUP:TOPIC; each worker joins every group", min_length=1),
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


def parse_groups(specs: list[str]) -> dict[str, list[str]]:
    """Parse ``GROUP:TOPIC`` specs into ``{group: [topics]}``.

    Raises:
        ConfigError: malformed spec, unsafe topic name, a ``.retry``/``.dlq`` topic, or one
            topic in two groups (both would land it in the same files: duplicates).
    """
    out: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for spec in specs:
        group, sep, topic = spec.partition(":")
        if not sep or not group.strip() or not topic.strip():
            raise ConfigError(f"--groups (env {ENV_PREFIX}GROUPS): {spec!r} is not GROUP:TOPIC (e.g. sink:visit)")
        group, topic = group.strip(), topic.strip()
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
        description="Kafka -> append-only segment files, exactly once (design.md §3-§4).",
        env_prefix=ENV_PREFIX,
        environ=environ,
    )
    parse_brokers(settings.brokers)
    parse_groups(settings.groups)
    check_record_directory(settings.record_path)
    return settings


def check_record_directory(path: Path) -> None:
    """Create the record directory if missing and check it is writable.

    Raises:
        ConfigError: it cannot be created, is not a directory, or is not writable.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--record-directory: {str(path)!r} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--record-directory: cannot create {str(path)!r}: {exc.strerror}") from exc
    if not path.is_dir():
        raise ConfigError(f"--record-directory: {str(path)!r} is not a directory")
    probe = path / f".footfall-write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"--record-directory: {str(path)!r} is not writable ({exc.strerror}); fix its permissions or pick another"
        ) from exc
