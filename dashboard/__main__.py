"""``footfall dashboard`` / ``python -m dashboard``: serve the page and the query API.

One Sanic process (single worker): the rollup database is one DuckDB file that only one
process may open for writing, and DuckDB already runs each query on several threads.

Before serving, the port must be free, the rollup database's directory writable and the
database not held by another dashboard: each refusal is one line naming the flag, exit 1
(a bad flag: exit 2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dashboard.errors import DatabaseLockedError
from dashboard.settings import ENV_PREFIX, DashboardSettings
from footfall.errors import StartupError
from footfall.logs import configure_logging
from footfall.preflight import check_directory, check_listen, describe_pid, listen_socket
from footfall.settings import parse_settings, run_main

if TYPE_CHECKING:
    from dashboard.store import RollupStore

__all__ = ["main"]

log = logging.getLogger("dashboard")

_BACKLOG = 100  # Sanic's default

_DESCRIPTION = """\
Web page with charts over the landed report files, and its JSON query API.

Newly landed lines are folded into rollups (a DuckDB file under
<record-directory>/_footfall/ or --state-dir) every --refresh-interval seconds, so
queries stay fast as data grows. Serves /, /api/v1/*, /healthz, /readyz, /metrics.
"""


def _check_state_directory(settings: DashboardSettings) -> None:
    """The rollups need a writable directory; the record directory itself may be read-only."""
    if settings.state_dir:
        check_directory(settings.database_path.parent, "--state-dir")
        return
    advice = "the dashboard keeps its rollups there: give it a writable --state-dir"
    check_directory(settings.database_path.parent, "--record-directory", advice)


def _open_store(settings: DashboardSettings) -> RollupStore:
    """The started rollup store; a database another process holds is a one-line StartupError."""
    from dashboard.store import RollupStore

    store = RollupStore(
        settings.record_path,
        settings.database_path,
        {settings.visit_topic: "visit", settings.activity_topic: "activity"},
        batch_bytes=settings.batch_mb * 1024 * 1024,
        threads=settings.duckdb_threads,
        memory_limit=settings.duckdb_memory_limit,
    )
    try:
        store.start()
    except DatabaseLockedError as exc:
        holder = describe_pid(exc.pid) if exc.pid is not None else "pid unknown"
        flag = "--state-dir" if settings.state_dir else "--record-directory"
        raise StartupError(
            f"{flag}: another dashboard ({holder}) holds {exc.path}; "
            "stop it, or give this dashboard its own --state-dir"
        ) from exc
    return store


def _serve(settings: DashboardSettings, store: RollupStore) -> None:
    from dashboard.app import create_app

    if settings.credentials is None and settings.host not in {"127.0.0.1", "localhost", "::1"}:
        log.warning("dashboard exposed without --auth", extra={"host": settings.host})
    app = create_app(settings, store=store)
    sock = listen_socket(settings.host, settings.port, "--port", _BACKLOG)
    log.info(
        "dashboard starting",
        extra={
            "host": settings.host,
            "port": sock.getsockname()[1],
            "record_directory": settings.record_directory,
            "database": str(settings.database_path),
        },
    )
    # single_process: no Sanic worker manager; SIGINT/SIGTERM stop the server
    # gracefully (GRACEFUL_SHUTDOWN_TIMEOUT = --shutdown-timeout).
    try:
        app.run(sock=sock, single_process=True, access_log=False, motd=False, backlog=_BACKLOG)
    finally:
        sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dashboard until SIGINT/SIGTERM; returns the exit code."""

    def run() -> int:
        settings = parse_settings(
            DashboardSettings, argv, prog="footfall dashboard", description=_DESCRIPTION, env_prefix=ENV_PREFIX
        )
        configure_logging(settings.log_level, role="dashboard")
        check_listen(settings.host, settings.port, "--port")
        _check_state_directory(settings)
        # Opened before serving: a database another dashboard holds is refused before the
        # port is taken, and without Sanic's start-up traceback.
        store = _open_store(settings)
        try:
            _serve(settings, store)
        finally:
            store.stop()
        return 0

    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
