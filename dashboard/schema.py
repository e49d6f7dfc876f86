"""What the rollup database holds: its tables, the cells they count, and the migration.

Rollups are derived data: a database of another schema version is dropped and folded
again from the files rather than migrated (:func:`migrate`).
"""

from __future__ import annotations

import logging
from typing import Final, Literal

import duckdb

__all__ = [
    "DERIVED_TABLES",
    "DURATION_EDGES_MINUTES",
    "GEO_CELLS",
    "GROUP_KEYS",
    "MINUTE_MS",
    "ROLLUP_TABLES",
    "SCHEMA_VERSION",
    "ReportKind",
    "kind_code",
    "migrate",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 5
#: The rollups' grain: a report counts in minute ``report time // MINUTE_MS``.
MINUTE_MS: Final = 60_000

#: Lower edges (minutes) of the visit-duration histogram buckets; the last bucket is open.
DURATION_EDGES_MINUTES: Final = (0, 5, 10, 15, 20, 30, 40, 45, 60, 90, 120, 180, 240, 480, 720, 1440)
#: Allowed geographic grid cell sizes (degrees); rollups keep 1-degree cells.
GEO_CELLS: Final = (1, 2, 5, 10)

ReportKind = Literal["visit", "activity"]


def kind_code(kind: ReportKind) -> int:
    """The ``kind`` column's value for a report kind: 0 visit, 1 activity (2 is "either")."""
    return 0 if kind == "visit" else 1


#: Each rollup table's cell columns: everything but ``file_id`` and ``n`` (compaction sums
#: ``n`` over them). ``*_d`` tables are the day-grain twins of the minute-grain ones.
GROUP_KEYS: Final = {
    "r_count": "minute, kind",
    "r_activity": "minute, activity_type",
    "r_algorithm": "minute, algorithm_type",
    "r_duration": "minute, bucket",
    "r_geo": "minute, lat, lon",
    "r_poi": "minute, poi_id, user_key",
    "r_activity_d": "day, activity_type",
    "r_algorithm_d": "day, algorithm_type",
    "r_duration_d": "day, bucket",
    "r_geo_d": "day, lat, lon",
    "r_poi_d": "day, poi_id",
}
#: Tables with rows per file (``file_id``): dropped with the file.
ROLLUP_TABLES: Final = (*GROUP_KEYS, "r_user_day")
#: Tables computed from the rollups, or not per file.
DERIVED_TABLES: Final = ("users", "c_user_day", "dirty_days", "pair_minutes", "seen", "dup")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS files (
    file_id INTEGER PRIMARY KEY, path VARCHAR UNIQUE, topic VARCHAR, kind VARCHAR,
    folded_bytes BIGINT, pieces INTEGER, lines BIGINT, bad_lines BIGINT
);
CREATE SEQUENCE IF NOT EXISTS file_ids;
-- kind: 0 visit, 1 activity. minute = report time // 60000; day = report time // 86400000.
CREATE TABLE IF NOT EXISTS r_count (file_id INTEGER, minute BIGINT, kind TINYINT, n BIGINT);
CREATE TABLE IF NOT EXISTS r_activity (file_id INTEGER, minute BIGINT, activity_type INTEGER, n BIGINT);
CREATE TABLE IF NOT EXISTS r_algorithm (file_id INTEGER, minute BIGINT, algorithm_type INTEGER, n BIGINT);
CREATE TABLE IF NOT EXISTS r_duration (file_id INTEGER, minute BIGINT, bucket SMALLINT, n BIGINT);
CREATE TABLE IF NOT EXISTS r_geo (file_id INTEGER, minute BIGINT, lat SMALLINT, lon SMALLINT, n BIGINT);
-- userIds are dictionary-encoded: distinct counts hash a 4-byte key instead of a 16-byte UUID.
CREATE SEQUENCE IF NOT EXISTS user_keys;
CREATE TABLE IF NOT EXISTS users (user_id UUID PRIMARY KEY, user_key INTEGER);
CREATE TABLE IF NOT EXISTS r_poi (file_id INTEGER, minute BIGINT, poi_id BIGINT, user_key INTEGER, n BIGINT);
CREATE TABLE IF NOT EXISTS r_user_day (file_id INTEGER, day INTEGER, kind TINYINT, user_key INTEGER);
-- Day-grain copies (day = report time // 86400000): a range query reads whole UTC days here
-- and only the partial days at its ends from the minute tables, so long ranges scan a few
-- rows per day instead of a few per minute.
CREATE TABLE IF NOT EXISTS r_activity_d (file_id INTEGER, day BIGINT, activity_type INTEGER, n BIGINT);
CREATE TABLE IF NOT EXISTS r_algorithm_d (file_id INTEGER, day BIGINT, algorithm_type INTEGER, n BIGINT);
CREATE TABLE IF NOT EXISTS r_duration_d (file_id INTEGER, day BIGINT, bucket SMALLINT, n BIGINT);
CREATE TABLE IF NOT EXISTS r_geo_d (file_id INTEGER, day BIGINT, lat SMALLINT, lon SMALLINT, n BIGINT);
CREATE TABLE IF NOT EXISTS r_poi_d (file_id INTEGER, day BIGINT, poi_id BIGINT, n BIGINT);
-- Exact distinct users per day (kind 0 visit, 1 activity, 2 either), recomputed for the
-- days in dirty_days at the end of each refresh; dirty_days is written in the same
-- transaction as the rows that dirtied them, so a crash cannot leave a stale count.
CREATE TABLE IF NOT EXISTS c_user_day (day INTEGER, kind TINYINT, users BIGINT);
CREATE TABLE IF NOT EXISTS dirty_days (day INTEGER);
-- One row per distinct (poi, user, minute) with the pair's previous visit minute (-1 if
-- none). A pair has a visit in [lo, hi) iff exactly one of its rows there has prev < lo,
-- so distinct users per POI over any range is a filtered count, not a hash of pairs.
-- Global (no file_id): after a file is dropped it is rebuilt from r_poi (flag in meta).
CREATE TABLE IF NOT EXISTS pair_minutes (poi_id BIGINT, user_key INTEGER, minute BIGINT, prev BIGINT);
-- Distinct counting. seen: one row per valid landed line, keyed by (kind, report time, hash
-- of every field the dashboard reads); a report that landed n times has n rows. dup: per
-- such report, its extra copies (n - 1) and its rollup cells, so "each distinct report
-- once" is every rollup count minus dup's, over the same range.
CREATE TABLE IF NOT EXISTS seen (kind TINYINT, t BIGINT, h UBIGINT, file_id INTEGER);
CREATE TABLE IF NOT EXISTS dup (
    kind TINYINT, t BIGINT, h UBIGINT, minute BIGINT, activity_type INTEGER, algorithm_type INTEGER,
    bucket SMALLINT, lat SMALLINT, lon SMALLINT, poi_id BIGINT, extra BIGINT, PRIMARY KEY (kind, t, h)
);
"""


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables, or drop them all first when the database has another schema version."""
    con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is not None and row[0] != str(SCHEMA_VERSION):
        log.warning("dashboard database schema changed; rebuilding", extra={"found": row[0]})
        for table in (*ROLLUP_TABLES, *DERIVED_TABLES, "files"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute("DROP SEQUENCE IF EXISTS file_ids")
        con.execute("DROP SEQUENCE IF EXISTS user_keys")
    con.execute(_SCHEMA)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
