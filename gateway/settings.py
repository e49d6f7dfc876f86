"""Gateway settings: one frozen Struct, filled from CLI flags > env vars > defaults.

Every field is a flag (``--max-inflight-bytes``) and an env var
(``FOOTFALL_GATEWAY_MAX_INFLIGHT_BYTES``); ``--brokers`` uses ``FOOTFALL_BROKERS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from footfall.errors import ConfigError
from footfall.kafka import parse_brokers
from footfall.layout import check_topic
from footfall.settings import LogLevel, SettingsParser

__all__ = ["ENV_PREFIX", "GatewaySettings", "parse_gateway_settings"]

ENV_PREFIX: Final = "FOOTFALL_GATEWAY_"

Compression = Literal["none", "gzip", "lz4", "zstd"]
Idempotence = Literal["auto", "on", "off"]

KiB: Final = 1024
MiB: Final = 1024 * 1024


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one gateway process (and each of its workers) is configured with."""

    brokers: Annotated[
        str, Meta(description="Kafka bootstrap servers, host:port[,host:port]", extra={"env": "FOOTFALL_BROKERS"})
    ] = "127.0.0.1:9092"
    host: Annotated[str, Meta(description="address to listen on")] = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535, description="TCP port to listen on (0: a free one, logged at start)")] = (
        8080
    )
    workers: Annotated[int, Meta(ge=0, le=256, description="worker processes; 0 = one per CPU")] = 0
    visit_topic: Annotated[str, Meta(description="Kafka topic for visit reports")] = "visit"
    activity_topic: Annotated[str, Meta(description="Kafka topic for activity reports")] = "activity"
    partitions: Annotated[int, Meta(ge=1, le=100_000, description="partitions of topics created at start-up")] = 4
    replication_factor: Annotated[
        int, Meta(ge=1, le=32, description="replication factor of topics created at start-up")
    ] = 1
    acks: Annotated[Literal["all"], Meta(description="producer acks; only 'all' keeps the 2xx-after-ack promise")] = (
        "all"
    )
    linger_ms: Annotated[
        float, Meta(ge=0, le=10_000, description="extra wait before a batch may be sent (0 = adaptive only)")
    ] = 0.0
    batch_size: Annotated[
        int, Meta(ge=1024, le=64 * MiB, description="max bytes of one record batch per partition")
    ] = 512 * KiB
    compression: Annotated[Compression, Meta(description="record batch compression")] = "none"
    request_timeout_ms: Annotated[
        int, Meta(ge=100, le=600_000, description="producer request timeout (Kafka produce request)")
    ] = 10_000
    produce_timeout_ms: Annotated[
        int, Meta(ge=10, le=600_000, description="how long a request waits for the ack before answering 503")
    ] = 5_000
    idempotence: Annotated[
        Idempotence, Meta(description="idempotent producer: auto = use it if the broker supports InitProducerId")
    ] = "auto"
    max_inflight_bytes: Annotated[
        int, Meta(ge=1024, description="per-worker cap on report bytes awaiting the broker's ack; past it: 503")
    ] = 64 * MiB
    max_body_bytes: Annotated[
        int, Meta(ge=64, description="largest request body as sent (compressed), checked from Content-Length")
    ] = 2 * MiB
    max_decompressed_bytes: Annotated[int, Meta(ge=64, description="largest request body after gunzip/inflate")] = (
        4 * MiB
    )
    max_expansion_ratio: Annotated[
        int, Meta(ge=1, description="largest decompressed/compressed size ratio (bodies over 64 KiB)")
    ] = 200
    max_errors: Annotated[int, Meta(ge=1, le=1000, description="validation errors listed in a 422 answer")] = 20
    api_keys: Annotated[
        list[str],
        Meta(
            description="accepted API key (Authorization: Bearer K or X-API-Key: K); none = no auth",
            extra={"flag": "--api-key", "env": "FOOTFALL_GATEWAY_API_KEYS"},
        ),
    ] = msgspec.field(default_factory=list)
    cors_origins: Annotated[
        list[str],
        Meta(
            description="allowed browser origin for CORS ('*' = any); none = CORS off",
            extra={"flag": "--cors-origin", "env": "FOOTFALL_GATEWAY_CORS_ORIGINS"},
        ),
    ] = msgspec.field(default_factory=list)
    access_log: Annotated[bool, Meta(description="log one JSON line per request")] = False
    log_level: Annotated[LogLevel, Meta(description="log level")] = "info"
    shutdown_timeout: Annotated[
        float, Meta(ge=0, le=3600, description="seconds to drain in-flight requests and batches on SIGTERM")
    ] = 15.0
    client_timeout: Annotated[
        int,
        Meta(
            ge=1, le=3600, description="seconds a client has to send one request's headers and body (slowloris bound)"
        ),
    ] = 30
    keep_alive_timeout: Annotated[
        int, Meta(ge=1, le=3600, description="seconds an idle keep-alive connection stays open")
    ] = 75
    startup_timeout: Annotated[float, Meta(ge=0, le=3600, description="seconds to wait for the broker at start-up")] = (
        30.0
    )
    retry_after: Annotated[int, Meta(ge=0, le=3600, description="Retry-After seconds sent with a 503")] = 1
    metrics_dir: Annotated[
        str, Meta(description="directory for per-worker metric snapshots; empty = a fresh temporary one")
    ] = ""

    @property
    def worker_count(self) -> int:
        """``workers``, with 0 resolved to the CPU count."""
        return self.workers or (os.cpu_count() or 1)

    def topic_for(self, report_type: str) -> str:
        """The topic of a report type (``visit``/``activity``)."""
        return self.visit_topic if report_type == "visit" else self.activity_topic


def _check(settings: GatewaySettings) -> GatewaySettings:
    parse_brokers(settings.brokers)
    for flag, topic in (("--visit-topic", settings.visit_topic), ("--activity-topic", settings.activity_topic)):
        try:
            check_topic(topic)
        except ConfigError as exc:
            raise ConfigError(f"{flag}: {exc}") from exc
    if settings.visit_topic == settings.activity_topic:
        raise ConfigError("--activity-topic: must differ from --visit-topic")
    if settings.compression != "none":
        from aiokafka import codec  # type: ignore[import-untyped]

        available = {"gzip": codec.has_gzip, "lz4": codec.has_lz4, "zstd": codec.has_zstd}[settings.compression]
        if not available():
            package = "cramjam"  # aiokafka 0.14 compresses lz4 and zstd with cramjam
            raise ConfigError(f"--compression {settings.compression}: the Python package {package!r} is not installed")
    if any(not k or len(k) > 4096 for k in settings.api_keys):
        raise ConfigError("--api-key: keys must be 1..4096 characters")
    return settings


def parse_gateway_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> GatewaySettings:
    """Parse CLI flags and env vars.

    Raises:
        ConfigError: a value is invalid (one line naming the flag).
        SystemExit: ``--help``, or an unknown flag (exit 2, argparse's message).
    """
    parser = SettingsParser(
        GatewaySettings,
        prog="footfall gateway",
        description="HTTP ingestion: POST reports, answered 200 only after Kafka acknowledged them.",
        env_prefix=ENV_PREFIX,
    )
    settings: GatewaySettings = parser.parse(argv, environ)
    return _check(settings)
