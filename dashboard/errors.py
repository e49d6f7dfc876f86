"""Dashboard errors.

Hierarchy::

    DashboardError            root of every error raised by the dashboard package
    ├── StoreError            the rollup database cannot be opened or used
    │   └── DatabaseLockedError   another process holds the database file (``path``, ``pid``)
    └── QueryError            a bad query parameter (HTTP 400; ``status`` attribute)
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from footfall.errors import FootfallError

__all__ = ["DashboardError", "DatabaseLockedError", "QueryError", "StoreError"]


class DashboardError(FootfallError):
    """Root of the dashboard's errors."""


class StoreError(DashboardError):
    """The rollup database cannot be opened or used."""


class DatabaseLockedError(StoreError):
    """Another process (``pid``, when DuckDB names it) has the database file ``path`` open:
    one DuckDB file has one writer process."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(f"{holder} holds the dashboard database {path}")
        self.path = path
        self.pid = pid


class QueryError(DashboardError):
    """A query parameter is missing, unknown or invalid; the message says which and why."""

    status: ClassVar[int] = 400
