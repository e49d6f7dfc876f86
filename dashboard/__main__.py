"""``footfall dashboard`` / ``python -m dashboard``: serve the page and the query API.

One Sanic process (single worker): the rollup database is one DuckDB file that only one
process may open for writing, and DuckDB already runs each query on several threads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dashboard.settings import ENV_PREFIX, DashboardSettings
from footfall.logs import configure_logging
from footfall.settings import parse_settings, run_main

__all__ = ["main"]

log = logging.getLogger("dashboard")

_DESCRIPTION = """\
Web page with charts over the landed report files, and its JSON query API.

Newly landed lines are folded into rollups (a DuckDB file under
<record-directory>/_footfall/ or --state-dir) every --refresh-interval seconds, so
queries stay fast as data grows. Serves /, /api/v1/*, /healthz, /readyz, /metrics.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dashboard until SIGINT/SIGTERM; returns the exit code."""

    def run() -> int:
        settings = parse_settings(
            DashboardSettings, argv, prog="footfall dashboard", description=_DESCRIPTION, env_prefix=ENV_PREFIX
        )
        configure_logging(settings.log_level, role="dashboard")
        from dashboard.app import create_app

        if settings.credentials is None and settings.host not in {"127.0.0.1", "localhost", "::1"}:
            log.warning("dashboard exposed without --auth", extra={"host": settings.host})
        app = create_app(settings)
        log.info(
            "dashboard starting",
            extra={
                "host": settings.host,
                "port": settings.port,
                "record_directory": settings.record_directory,
                "database": str(settings.database_path),
            },
        )
        # single_process: no Sanic worker manager; SIGINT/SIGTERM stop the server
        # gracefully (GRACEFUL_SHUTDOWN_TIMEOUT = --shutdown-timeout).
        app.run(
            host=settings.host,
            port=settings.port,
            single_process=True,
            access_log=False,
            motd=False,
        )
        return 0

    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
