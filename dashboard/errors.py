"""Dashboard errors.

Hierarchy::

    DashboardError            root of every error raised by the dashboard package
    ├── StoreError            the rollup database cannot be opened or used
    └── QueryError            a bad query parameter (HTTP 400; ``status`` attribute)
"""

from __future__ import annotations

from typing import ClassVar

from footfall.errors import FootfallError

__all__ = ["DashboardError", "QueryError", "StoreError"]


class DashboardError(FootfallError):
    """Root of the dashboard's errors."""


class StoreError(DashboardError):
    """The rollup database cannot be opened or used."""


class QueryError(DashboardError):
    """A query parameter is missing, unknown or invalid; the message says which and why."""

    status: ClassVar[int] = 400
