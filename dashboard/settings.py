"""Dashboard settings: CLI flags > ``FOOTFALL_DASHBOARD_*`` env vars > defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from footfall.errors import ConfigError
from footfall.layout import check_topic
from footfall.settings import LogLevel

__all__ = ["ENV_PREFIX", "DashboardSettings"]

ENV_PREFIX: Final = "FOOTFALL_DASHBOARD_"


class DashboardSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one dashboard process needs; see ``footfall dashboard --help``."""

    record_directory: Annotated[str, Meta(min_length=1, description="the sink's record directory (read only)")]
    host: Annotated[
        str, Meta(min_length=1, description="address to bind; 127.0.0.1 keeps the page local (use --auth if exposed)")
    ] = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535, description="HTTP port (0: a free one, logged at start)")] = 8050
    auth: Annotated[
        Annotated[str, Meta(pattern=r"^[^:]+:.+$")] | None,
        Meta(description="USER:PASSWORD to require HTTP basic auth on everything but the probes"),
    ] = None
    state_dir: Annotated[
        str | None,
        Meta(description="where dashboard.duckdb (the rollups) lives; default <record-directory>/_footfall"),
    ] = None
    visit_topic: Annotated[str, Meta(description="topic (directory) holding visit reports")] = "visit"
    activity_topic: Annotated[str, Meta(description="topic (directory) holding activity reports")] = "activity"
    refresh_interval: Annotated[
        float, Meta(gt=0, le=60, description="seconds between scans for newly landed lines")
    ] = 1.0
    batch_mb: Annotated[
        int,
        Meta(
            ge=1,
            le=4096,
            description="most MiB of landed lines folded per transaction; a larger file is folded in several",
        ),
    ] = 256
    duckdb_threads: Annotated[int, Meta(ge=1, le=64, description="DuckDB worker threads")] = 2
    duckdb_memory_limit: Annotated[
        str, Meta(pattern=r"^\d+(\.\d+)?\s*[KMGT]i?B$", description="DuckDB memory limit, e.g. 1GB")
    ] = "1GB"
    log_level: Annotated[LogLevel, Meta(description="log level")] = "info"
    shutdown_timeout: Annotated[
        float, Meta(gt=0, description="seconds to finish in-flight requests on SIGTERM/SIGINT")
    ] = 10.0

    def __post_init__(self) -> None:
        check_topic(self.visit_topic)
        check_topic(self.activity_topic)
        if self.visit_topic == self.activity_topic:
            raise ConfigError("--visit-topic and --activity-topic must differ")

    @property
    def record_path(self) -> Path:
        return Path(self.record_directory)

    @property
    def database_path(self) -> Path:
        """The rollup database file."""
        base = Path(self.state_dir) if self.state_dir else self.record_path / "_footfall"
        return base / "dashboard.duckdb"

    @property
    def credentials(self) -> tuple[str, str] | None:
        if self.auth is None:
            return None
        user, _, password = self.auth.partition(":")
        return user, password
