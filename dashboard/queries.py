"""The query API over the rollup tables: one method per view of the page.

Every value from a request is bound as a DuckDB parameter; only table and column names
chosen from constants are put into the SQL text.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Sequence
from typing import Any, Final, Literal

import duckdb

from dashboard.ranges import BUCKET_MINUTES, Bucket, Range
from dashboard.schema import DURATION_EDGES_MINUTES, MINUTE_MS, ReportKind, kind_code

__all__ = ["RollupQueries", "bucket_start"]

_MINUTES_PER_DAY: Final = BUCKET_MINUTES["day"]
# r_count with each report's extra copies subtracted (same columns the time series reads).
_DEDUPED_COUNT: Final = "(SELECT minute, kind, n FROM r_count UNION ALL SELECT minute, kind, -extra FROM dup)"


def bucket_start(bucket: Bucket) -> tuple[str, dict[str, Any]]:
    """SQL for the start (epoch ms) of the ``bucket`` holding rollup minute ``minute``, and
    its parameters: a fixed-width bucket by integer division, month and year by calendar (UTC)."""
    if bucket in BUCKET_MINUTES:
        return f"minute // $w * $w * {MINUTE_MS}", {"w": BUCKET_MINUTES[bucket]}
    return f"epoch_ms(date_trunc($part, epoch_ms(minute * {MINUTE_MS})))", {"part": bucket}


class RollupQueries(abc.ABC):
    """The views, answered from the rollups (mixed into :class:`dashboard.store.RollupStore`).

    ``dedupe`` counts each distinct report once (every method taking it does the same).
    """

    @abc.abstractmethod
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection for the calling thread."""

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[tuple[Any, ...]]:
        return self.cursor().execute(sql, params).fetchall()

    def summary(self) -> dict[str, Any]:
        """Totals (landed lines, and distinct reports), data extent and fold progress."""
        totals = dict(self._rows("SELECT kind, sum(n)::BIGINT FROM r_count GROUP BY kind", []))
        extra = dict(self._rows("SELECT kind, sum(extra)::BIGINT FROM dup GROUP BY kind", []))
        extent = self._rows("SELECT min(minute), max(minute) FROM r_count", [])[0]
        files = self._rows(
            "SELECT count(*), coalesce(sum(lines), 0)::BIGINT, coalesce(sum(bad_lines), 0)::BIGINT FROM files", []
        )[0]
        return {
            "reports": {"visit": int(totals.get(0, 0)), "activity": int(totals.get(1, 0))},
            "distinctReports": {
                "visit": int(totals.get(0, 0)) - int(extra.get(0, 0)),
                "activity": int(totals.get(1, 0)) - int(extra.get(1, 0)),
            },
            "firstMs": None if extent[0] is None else int(extent[0]) * MINUTE_MS,
            "lastMs": None if extent[1] is None else (int(extent[1]) + 1) * MINUTE_MS,
            "files": int(files[0]),
            "badLines": int(files[2]),
        }

    def extent(self) -> Range | None:
        """The minute-aligned range holding every folded report, or ``None`` when empty."""
        lo, hi = self._rows("SELECT min(minute), max(minute) FROM r_count", [])[0]
        if lo is None:
            return None
        return Range(int(lo) * MINUTE_MS, (int(hi) + 1) * MINUTE_MS)

    def timeseries(
        self, r: Range, bucket: Bucket, kinds: Sequence[ReportKind], *, dedupe: bool = False
    ) -> list[dict[str, int]]:
        """Reports per bucket and kind: ``[{"t": bucket start ms, "visit": n, "activity": n}]``."""
        start, params = bucket_start(bucket)
        params.update({"lo": r.start_minute, "hi": r.end_minute, "kinds": [kind_code(k) for k in kinds]})
        source = _DEDUPED_COUNT if dedupe else "r_count"
        rows = self._rows(
            f"SELECT {start} AS t, "  # noqa: S608 - start and source are constants
            "sum(n) FILTER (WHERE kind = 0)::BIGINT, sum(n) FILTER (WHERE kind = 1)::BIGINT "
            f"FROM {source} WHERE minute >= $lo AND minute < $hi AND list_contains($kinds, kind) "
            "GROUP BY t HAVING sum(n) > 0 ORDER BY t",
            params,
        )
        return [{"t": int(t), "visit": int(v or 0), "activity": int(a or 0)} for t, v, a in rows]

    @staticmethod
    def _span(table: str, columns: str, r: Range, dedupe: bool = False) -> tuple[str, list[Any]]:
        """A subquery of ``columns, n`` rows covering ``r``: whole UTC days from the day
        table, the partial days at either end from the minute table, and with ``dedupe``
        the extra copies subtracted (identifiers are constants; values are bound)."""
        lo, hi = r.start_minute, r.end_minute
        first_day, end_day = -(-lo // _MINUTES_PER_DAY), hi // _MINUTES_PER_DAY  # whole days: [first_day, end_day)
        minute_sql = f"SELECT {columns}, n FROM {table} WHERE minute >= ? AND minute < ?"  # noqa: S608
        if first_day >= end_day:
            sql, params = minute_sql, [lo, hi]
        else:
            day_sql = f"SELECT {columns}, n FROM {table}_d WHERE day >= ? AND day < ?"  # noqa: S608
            sql = f"{day_sql} UNION ALL {minute_sql} UNION ALL {minute_sql}"
            params = [first_day, end_day, lo, first_day * _MINUTES_PER_DAY, end_day * _MINUTES_PER_DAY, hi]
        if dedupe:
            sql += f" UNION ALL SELECT {columns}, -extra FROM dup WHERE kind = ? AND minute >= ? AND minute < ?"  # noqa: S608
            params += [kind_code("activity" if table == "r_activity" else "visit"), lo, hi]
        return sql, params

    def _breakdown(self, table: str, column: str, r: Range, dedupe: bool) -> list[dict[str, int]]:
        span, params = self._span(table, column, r, dedupe)
        rows = self._rows(
            f"SELECT {column}, sum(n)::BIGINT FROM ({span}) GROUP BY 1 HAVING sum(n) > 0 ORDER BY 1",  # noqa: S608
            params,
        )
        return [{"type": int(k), "count": int(n)} for k, n in rows]

    def activity_types(self, r: Range, *, dedupe: bool = False) -> list[dict[str, int]]:
        """Activities per ``activityType``."""
        return self._breakdown("r_activity", "activity_type", r, dedupe)

    def algorithm_types(self, r: Range, *, dedupe: bool = False) -> list[dict[str, int]]:
        """Visits per ``algorithmType``."""
        return self._breakdown("r_algorithm", "algorithm_type", r, dedupe)

    def visit_durations(self, r: Range, *, dedupe: bool = False) -> list[dict[str, Any]]:
        """Visit-duration histogram, every bucket listed (zero counts included)."""
        span, params = self._span("r_duration", "bucket", r, dedupe)
        counts = dict(self._rows(f"SELECT bucket, sum(n)::BIGINT FROM ({span}) GROUP BY 1", params))  # noqa: S608
        out: list[dict[str, Any]] = []
        edges = DURATION_EDGES_MINUTES
        for i, lo in enumerate(edges):
            hi = edges[i + 1] if i + 1 < len(edges) else None
            out.append({"fromMinutes": lo, "toMinutes": hi, "count": int(counts.get(i, 0))})
        return out

    def top_pois(
        self, r: Range, by: Literal["visits", "users"], limit: int, *, dedupe: bool = False
    ) -> list[dict[str, Any]]:
        """Points of interest with the most visits (or distinct users), ties broken by poiId.

        Both counts are exact; distinct users come from ``pair_minutes`` (a filtered count,
        see the schema; the same with ``dedupe``), visits from ``r_poi``.
        """
        lo, hi = r.start_minute, r.end_minute
        if by == "visits":
            span, params = self._span("r_poi", "poi_id", r, dedupe)
            ranked = self._rows(
                f"SELECT poi_id, sum(n)::BIGINT AS visits FROM ({span}) "  # noqa: S608
                "GROUP BY poi_id ORDER BY visits DESC, poi_id LIMIT ?",
                [*params, limit],
            )
            users = self._poi_counts("users", r, [p for p, _ in ranked], dedupe)
            return [{"poiId": str(p), "visits": int(v), "users": users[p]} for p, v in ranked]
        ranked = self._rows(
            "SELECT poi_id, count(*) AS users FROM pair_minutes WHERE minute >= ? AND minute < ? AND prev < ? "
            "GROUP BY poi_id ORDER BY users DESC, poi_id LIMIT ?",
            [lo, hi, lo, limit],
        )
        visits = self._poi_counts("visits", r, [p for p, _ in ranked], dedupe)
        return [{"poiId": str(p), "visits": visits[p], "users": int(u)} for p, u in ranked]

    def _poi_counts(
        self, what: Literal["visits", "users"], r: Range, pois: Sequence[int], dedupe: bool
    ) -> dict[int, int]:
        if not pois:
            return {}
        # An IN list of placeholders (values still bound) plans as a constant filter, much
        # faster in DuckDB than a semi-join against an unnested list parameter.
        marks = ", ".join("?" * len(pois))
        if what == "visits":
            span, params = self._span("r_poi", "poi_id", r, dedupe)
            sql = f"SELECT poi_id, sum(n)::BIGINT FROM ({span}) WHERE poi_id IN ({marks}) GROUP BY poi_id"  # noqa: S608
            params = [*params, *pois]
        else:
            sql = f"SELECT poi_id, count(*) FROM pair_minutes WHERE minute >= ? AND minute < ? AND prev < ? AND poi_id IN ({marks}) GROUP BY poi_id"  # noqa: S608, E501
            params = [r.start_minute, r.end_minute, r.start_minute, *pois]
        found = {int(p): int(n) for p, n in self._rows(sql, params)}
        return {p: found.get(p, 0) for p in pois}

    def geo(self, r: Range, cell: int, *, dedupe: bool = False) -> list[list[int]]:
        """Visit density on a ``cell``-degree grid: ``[[lon_lo, lat_lo, count], ...]``."""
        span, params = self._span("r_geo", "lat, lon", r, dedupe)
        rows = self._rows(
            # floor(), not //: DuckDB integer division truncates toward zero.
            "SELECT floor(lon / ?)::INTEGER * ? AS x, floor(lat / ?)::INTEGER * ? AS y, sum(n)::BIGINT "  # noqa: S608
            f"FROM ({span}) GROUP BY x, y HAVING sum(n) > 0 ORDER BY x, y",
            [cell, cell, cell, cell, *params],
        )
        return [[int(x), int(y), int(n)] for x, y, n in rows]

    def unique_users(self, r: Range, kinds: Sequence[ReportKind]) -> list[dict[str, Any]]:
        """Distinct userIds per UTC day, for every day overlapping the range: whole days,
        so the range counted is :meth:`Range.whole_days` of ``r``."""
        kind = 2 if len(kinds) > 1 else kind_code(kinds[0])
        rows = self._rows(
            "SELECT day, users FROM c_user_day WHERE day >= ? AND day <= ? AND kind = ? AND users > 0 ORDER BY day",
            [r.first_day, r.last_day, kind],
        )
        return [
            {"day": (dt.date(1970, 1, 1) + dt.timedelta(days=int(d))).isoformat(), "users": int(u)} for d, u in rows
        ]
