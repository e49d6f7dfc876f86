"""Footfall dashboard: a web page with charts over the landed report files.

Newly landed lines are folded incrementally into minute- and day-grain rollups in a
DuckDB file (:mod:`dashboard.store`, which holds :mod:`dashboard.fold` and
:mod:`dashboard.queries`); a Sanic app (:mod:`dashboard.app`) serves the page, its
vendored assets and a JSON query API over those rollups.
"""

from __future__ import annotations

from dashboard.errors import DashboardError, DatabaseLockedError, QueryError, StoreError
from dashboard.settings import DashboardSettings

__all__ = ["DashboardError", "DashboardSettings", "DatabaseLockedError", "QueryError", "StoreError"]
