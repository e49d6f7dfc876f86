"""The fold's SQL: which rollup cells each report kind feeds, as statements over a batch.

Every statement here reads the temp table ``batch`` (``file_id``, ``user_key`` and the
report columns of :data:`COLUMNS`) or the tables the fold builds from it. Statements are
composed from the small named fragments below (the time bucket of a grain, a cell's
expression), never by rewriting another statement. Only module constants go into them;
request input never reaches this module.
"""

from __future__ import annotations

import dataclasses
from typing import Final, Literal

from dashboard.schema import DURATION_EDGES_MINUTES, MINUTE_MS, ReportKind, kind_code
from footfall.layout import MS_PER_DAY

__all__ = [
    "COLUMNS",
    "DEDUPE_DROP",
    "DEDUPE_STEPS",
    "GRAINS",
    "KEYED",
    "PAIR_REBUILD",
    "PAIR_STEPS",
    "ROLLUPS",
    "VALID",
    "Grain",
    "Rollup",
    "bucket_of",
    "duration_case",
]

Grain = Literal["minute", "day"]
#: The rollup grains and their width in milliseconds.
GRAINS: Final[dict[Grain, int]] = {"minute": MINUTE_MS, "day": MS_PER_DAY}


def bucket_of(column: str, grain: Grain) -> str:
    """SQL for the ``grain`` bucket of a report-time column, e.g. ``enterTime // 60000``."""
    return f"{column} // {GRAINS[grain]}"


def duration_case(column: str) -> str:
    """SQL for the visit-duration histogram bucket (index into ``DURATION_EDGES_MINUTES``)
    of a duration in milliseconds."""
    parts = [
        f"WHEN {column} >= {edge * MINUTE_MS} THEN {i}" for i, edge in reversed(list(enumerate(DURATION_EDGES_MINUTES)))
    ]
    return "CASE " + " ".join(parts) + " ELSE 0 END"


# Cells (one fragment each, shared by the rollups and the duplicate keys).
_DURATION: Final = duration_case("exitTime - enterTime")
_LAT: Final = "least(floor(latitude), 89)::SMALLINT"
_LON: Final = "least(floor(longitude), 179)::SMALLINT"


@dataclasses.dataclass(frozen=True, slots=True)
class _Kind:
    """How one report kind is read, checked and keyed."""

    code: int
    time: str  # the report time: its minute and day are the rollup buckets
    end: str
    columns: dict[str, str]  # read_json columns: every field the dashboard reads
    checks: tuple[str, ...]  # beyond "every column set" and "end >= time"
    dup_cells: dict[str, str]  # the columns of `dup` after `minute`, in its order


_KINDS: Final[dict[ReportKind, _Kind]] = {
    "visit": _Kind(
        code=kind_code("visit"),
        time="enterTime",
        end="exitTime",
        columns={
            "userId": "UUID",
            "algorithmType": "INTEGER",
            "enterTime": "BIGINT",
            "exitTime": "BIGINT",
            "poiId": "BIGINT",
            "latitude": "DOUBLE",
            "longitude": "DOUBLE",
        },
        checks=("latitude BETWEEN -90 AND 90", "longitude BETWEEN -180 AND 180"),
        dup_cells={
            "activity_type": "NULL::INTEGER",
            "algorithm_type": "algorithmType",
            "bucket": f"({_DURATION})::SMALLINT",
            "lat": _LAT,
            "lon": _LON,
            "poi_id": "poiId",
        },
    ),
    "activity": _Kind(
        code=kind_code("activity"),
        time="startTime",
        end="endTime",
        columns={"userId": "UUID", "activityType": "INTEGER", "startTime": "BIGINT", "endTime": "BIGINT"},
        checks=(),
        dup_cells={
            "activity_type": "activityType",
            "algorithm_type": "NULL::INTEGER",
            "bucket": "NULL::SMALLINT",
            "lat": "NULL::SMALLINT",
            "lon": "NULL::SMALLINT",
            "poi_id": "NULL::BIGINT",
        },
    ),
}

#: read_json columns per report kind.
COLUMNS: Final = {kind: spec.columns for kind, spec in _KINDS.items()}
#: The filter a line must pass to be a report (the others are bad lines).
VALID: Final = {
    kind: " AND ".join(
        (
            *(f"{c} IS NOT NULL" for c in spec.columns if c not in {"latitude", "longitude"}),
            f"{spec.end} >= {spec.time}",
            *spec.checks,
        )
    )
    for kind, spec in _KINDS.items()
}


@dataclasses.dataclass(frozen=True, slots=True)
class Rollup:
    """One rollup table: a batch's reports counted per (file, ``grain`` bucket, ``cells``)."""

    table: str
    grain: Grain
    cells: str
    clustered: bool = False  # rows ordered by time bucket: zonemaps prune range queries

    def insert(self, time_column: str) -> str:
        order = " ORDER BY m" if self.clustered else ""
        return (
            f"INSERT INTO {self.table} SELECT file_id, {bucket_of(time_column, self.grain)} AS m, {self.cells}, "  # noqa: S608 - constants
            f"count(*) FROM batch GROUP BY ALL{order}"
        )


_TABLES: Final[dict[ReportKind, tuple[Rollup, ...]]] = {
    "visit": (
        Rollup("r_count", "minute", str(kind_code("visit"))),
        Rollup("r_algorithm", "minute", "algorithmType"),
        Rollup("r_algorithm_d", "day", "algorithmType"),
        Rollup("r_duration", "minute", _DURATION),
        Rollup("r_duration_d", "day", _DURATION),
        Rollup("r_geo", "minute", f"{_LAT}, {_LON}", clustered=True),
        Rollup("r_geo_d", "day", f"{_LAT}, {_LON}", clustered=True),
        Rollup("r_poi", "minute", "poiId, user_key", clustered=True),
        Rollup("r_poi_d", "day", "poiId", clustered=True),
    ),
    "activity": (
        Rollup("r_count", "minute", str(kind_code("activity"))),
        Rollup("r_activity", "minute", "activityType"),
        Rollup("r_activity_d", "day", "activityType"),
    ),
}


def _rollup_statements(kind: ReportKind) -> tuple[str, ...]:
    spec = _KINDS[kind]
    day = f"({bucket_of(spec.time, 'day')})::INTEGER"
    return (
        *(rollup.insert(spec.time) for rollup in _TABLES[kind]),
        f"INSERT INTO r_user_day SELECT DISTINCT file_id, {day} AS d, {spec.code}, user_key FROM batch ORDER BY d",  # noqa: S608
        f"INSERT INTO dirty_days SELECT DISTINCT {day} FROM batch",  # noqa: S608
    )


#: The rollup inserts of a batch, per report kind.
ROLLUPS: Final = {kind: _rollup_statements(kind) for kind in _KINDS}


def _keyed(kind: ReportKind) -> str:
    spec = _KINDS[kind]
    cells = ", ".join(f"{expr} AS {name}" for name, expr in spec.dup_cells.items())
    return (
        f"CREATE OR REPLACE TEMP TABLE keyed AS SELECT file_id, {spec.code}::TINYINT AS kind, {spec.time} AS t, "  # noqa: S608
        f"hash({', '.join(spec.columns)}) AS h, {bucket_of(spec.time, 'minute')} AS minute, {cells} FROM batch"
    )


#: Per kind: the temp table ``keyed``, one row per line (its report key and rollup cells),
#: made before :data:`DEDUPE_STEPS`.
KEYED: Final = {kind: _keyed(kind) for kind in _KINDS}

# Steps of recording a batch's lines in seen/dup (order matters).
DEDUPE_STEPS: Final = (
    # 1. every line is one more copy of its report
    "INSERT INTO seen SELECT kind, t, h, file_id FROM keyed",
    # 2. copies of the reports the batch touched that landed more than once (the t bounds
    #    let zonemaps skip row groups of seen)
    "CREATE OR REPLACE TEMP TABLE copies AS SELECT kind, t, h, count(*) AS n FROM seen "
    "SEMI JOIN (SELECT DISTINCT kind, t, h FROM keyed) k USING (kind, t, h) "
    "WHERE t BETWEEN (SELECT min(t) FROM keyed) AND (SELECT max(t) FROM keyed) GROUP BY ALL HAVING count(*) > 1",
    # 3. their extra copies, with the report's cells
    "INSERT OR REPLACE INTO dup SELECT kind, t, h, any_value(minute), any_value(activity_type), "
    "any_value(algorithm_type), any_value(bucket), any_value(lat), any_value(lon), any_value(poi_id), "
    "any_value(c.n) - 1 FROM keyed JOIN copies c USING (kind, t, h) GROUP BY kind, t, h",
    "DROP TABLE keyed",
    "DROP TABLE copies",
)
# When a file's rows are dropped: recount the copies of the reports it held ($file bound).
DEDUPE_DROP: Final = (
    "CREATE OR REPLACE TEMP TABLE gone AS SELECT DISTINCT kind, t, h FROM seen WHERE file_id = $file",
    "DELETE FROM seen WHERE file_id = $file",
    "CREATE OR REPLACE TEMP TABLE copies AS SELECT g.kind, g.t, g.h, count(s.t) AS n FROM gone g "
    "LEFT JOIN seen s ON s.kind = g.kind AND s.t = g.t AND s.h = g.h GROUP BY ALL",
    "DELETE FROM dup USING copies c WHERE dup.kind = c.kind AND dup.t = c.t AND dup.h = c.h AND c.n <= 1",
    "UPDATE dup SET extra = c.n - 1 FROM copies c WHERE dup.kind = c.kind AND dup.t = c.t AND dup.h = c.h AND c.n > 1",
    "DROP TABLE gone",
    "DROP TABLE copies",
)

# Steps of folding a visit batch into pair_minutes (order matters).
PAIR_STEPS: Final = (
    # 1. the batch's distinct pair-minutes
    "CREATE OR REPLACE TEMP TABLE nb AS SELECT DISTINCT poiId AS poi_id, user_key, "  # noqa: S608 - constants
    f"{bucket_of(_KINDS['visit'].time, 'minute')} AS minute FROM batch",
    # 2. the rows already stored for the pairs the batch touches (semi join: builds on the small side)
    "CREATE OR REPLACE TEMP TABLE old AS SELECT pm.* FROM pair_minutes pm "
    "SEMI JOIN (SELECT DISTINCT poi_id, user_key FROM nb) a USING (poi_id, user_key)",
    # 3. the pair-minutes not stored yet
    "CREATE OR REPLACE TEMP TABLE fresh AS SELECT * FROM nb ANTI JOIN old USING (poi_id, user_key, minute)",
    # 4. prev recomputed over every row of the touched pairs
    "CREATE OR REPLACE TEMP TABLE linked AS SELECT poi_id, user_key, minute, "
    "lag(minute, 1, -1) OVER (PARTITION BY poi_id, user_key ORDER BY minute) AS prev "
    "FROM (SELECT poi_id, user_key, minute FROM old UNION ALL SELECT * FROM fresh)",
    # 5. stored rows whose prev changed (a visit arrived out of time order)
    "CREATE OR REPLACE TEMP TABLE relinked AS SELECT l.* FROM linked l JOIN old o USING (poi_id, user_key, minute) "
    "WHERE l.prev <> o.prev",
    "UPDATE pair_minutes SET prev = r.prev FROM relinked r WHERE pair_minutes.poi_id = r.poi_id "
    "AND pair_minutes.user_key = r.user_key AND pair_minutes.minute = r.minute",
    # 6. the new rows, clustered by minute (zonemaps prune range queries)
    "INSERT INTO pair_minutes SELECT l.* FROM linked l SEMI JOIN fresh USING (poi_id, user_key, minute) "
    "ORDER BY l.minute",
    "DROP TABLE nb",
    "DROP TABLE old",
    "DROP TABLE fresh",
    "DROP TABLE linked",
    "DROP TABLE relinked",
)
# pair_minutes again from r_poi, after a file's rows were dropped.
PAIR_REBUILD: Final = (
    "DELETE FROM pair_minutes",
    "INSERT INTO pair_minutes SELECT poi_id, user_key, minute, "
    "lag(minute, 1, -1) OVER (PARTITION BY poi_id, user_key ORDER BY minute) AS prev "
    "FROM (SELECT DISTINCT poi_id, user_key, minute FROM r_poi) ORDER BY minute",
    "DELETE FROM meta WHERE key = 'pairs_stale'",
)
