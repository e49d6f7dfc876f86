"""Footfall dashboard: a web page with charts over the landed report files.

Newly landed lines are folded incrementally into minute-grain rollups in a DuckDB file
(:mod:`dashboard.store`); a Sanic app (:mod:`dashboard.app`) serves the page, its
vendored assets and a JSON query API over those rollups.
"""

from __future__ import annotations

from dashboard.errors import DashboardError, QueryError, StoreError
from dashboard.settings import DashboardSettings

__all__ = ["DashboardError", "DashboardSettings", "QueryError", "StoreError"]
