"""Incremental rollups of the landed segment files, kept in a DuckDB database file.

Segment files are append-only: the sink only ever adds complete lines at the end of a
file (and, after a crash, truncates a torn tail and writes the *same* records again).
So every file is folded by byte range: the store remembers, per file, how many bytes it
has already folded, and each :meth:`RollupStore.refresh` folds only the complete lines
that landed since. Queries read the small rollup tables, never the raw files, so their
cost grows with the number of distinct (minute, dimension) cells, not with reports.

Delivery semantics: every complete line (ending in ``\\n``) present when a refresh
starts is counted exactly once after that refresh returns. A half-written last line is
left for the next refresh. A line that is not a valid report (torn, corrupt) is counted
in ``bad_lines`` and otherwise ignored. If a file shrinks (the sink truncated a tail
after a crash) its rows are dropped and it is folded again from the start; if a file
disappears its rows are dropped.

Refresh steps, in order (each batch is one DuckDB transaction, so a query sees a batch
entirely or not at all):

1. List ``<dir>/<topic>/date=*/*.jsonl`` for both topics (``_``-prefixed directories,
   the sink's own state, are never listed). A segment is closed when a later one of its
   partition exists, in (generation, start offset) order.
2. Compare each file's size with what was folded: skip unchanged files, reset shrunk
   ones, drop vanished ones.
3. Fold the new bytes in batches of at most ``batch_bytes`` (a file larger than that is
   folded over several batches; only a single line longer than the limit makes a batch
   bigger): a closed segment not folded before that fits in the batch is read in place;
   any other range is cut at its last newline and copied to a scratch file first (an
   open segment keeps growing while DuckDB would read it).
4. In one transaction: insert the batch's rollup rows (minute and day grain), add new
   users to the dictionary, link new (poi, user, minute) rows to the pair's previous
   visit, record each line's report key and the reports now landed more than once (for
   distinct counting), mark the touched days dirty, advance the files' folded offsets.
5. Recount distinct users for the dirty days; rebuild the pair links if a file was
   dropped (each in one transaction).
6. Compact the rows of segments that became closed after being folded in pieces.

A refresh interrupted by :meth:`RollupStore.stop` stops between batches; the rest is
folded by the next one.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import duckdb

from dashboard.errors import StoreError
from footfall.layout import parse_segment_name

__all__ = [
    "BUCKETS",
    "DAY_MS",
    "DURATION_EDGES_MINUTES",
    "GEO_CELLS",
    "MINUTE_MS",
    "SCHEMA_VERSION",
    "FileState",
    "Range",
    "RefreshResult",
    "RollupStore",
    "SegmentFile",
    "bucket_for_range",
    "bucket_points",
    "list_segments",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 5
MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000

#: Lower edges (minutes) of the visit-duration histogram buckets; the last bucket is open.
DURATION_EDGES_MINUTES: Final = (0, 5, 10, 15, 20, 30, 40, 45, 60, 90, 120, 180, 240, 480, 720, 1440)
#: Allowed geographic grid cell sizes (degrees); rollups keep 1-degree cells.
GEO_CELLS: Final = (1, 2, 5, 10)

ReportKind = Literal["visit", "activity"]
Bucket = Literal["minute", "hour", "day", "month", "year"]
#: Time-series buckets, finest first; month and year are calendar (UTC) buckets.
BUCKETS: Final[tuple[Bucket, ...]] = ("minute", "hour", "day", "month", "year")
_BUCKET_MINUTES: Final = {"minute": 1, "hour": 60, "day": 1440}

_VISIT_COLUMNS: Final = {
    "userId": "UUID",
    "algorithmType": "INTEGER",
    "enterTime": "BIGINT",
    "exitTime": "BIGINT",
    "poiId": "BIGINT",
    "latitude": "DOUBLE",
    "longitude": "DOUBLE",
}
_ACTIVITY_COLUMNS: Final = {
    "userId": "UUID",
    "activityType": "INTEGER",
    "startTime": "BIGINT",
    "endTime": "BIGINT",
}

_DAY_TABLES: Final = ("r_activity_d", "r_algorithm_d", "r_duration_d", "r_geo_d", "r_poi_d")
_ROLLUP_TABLES: Final = (
    "r_count",
    "r_activity",
    "r_algorithm",
    "r_duration",
    "r_geo",
    "r_poi",
    "r_user_day",
    *_DAY_TABLES,
)
_DERIVED_TABLES: Final = ("users", "c_user_day", "dirty_days", "pair_minutes", "seen", "dup")

# Steps of folding a visit batch into pair_minutes (order matters; see _fold_pairs).
_PAIR_STEPS: Final = (
    # 1. the batch's distinct pair-minutes
    "CREATE OR REPLACE TEMP TABLE nb AS SELECT DISTINCT poiId AS poi_id, user_key, enterTime // 60000 AS minute "
    "FROM batch",
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
_PAIR_REBUILD: Final = (
    "DELETE FROM pair_minutes",
    "INSERT INTO pair_minutes SELECT poi_id, user_key, minute, "
    "lag(minute, 1, -1) OVER (PARTITION BY poi_id, user_key ORDER BY minute) AS prev "
    "FROM (SELECT DISTINCT poi_id, user_key, minute FROM r_poi) ORDER BY minute",
    "DELETE FROM meta WHERE key = 'pairs_stale'",
)

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


def _duration_case(column: str) -> str:
    # Built from module constants only (never from request input).
    parts = [
        f"WHEN {column} >= {edge * MINUTE_MS} THEN {i}" for i, edge in reversed(list(enumerate(DURATION_EDGES_MINUTES)))
    ]
    return "CASE " + " ".join(parts) + " ELSE 0 END"


_DURATION_INSERT: Final = (
    "INSERT INTO r_duration SELECT file_id, enterTime // 60000 AS m, {} AS b, count(*) FROM batch GROUP BY ALL".format(  # noqa: S608
        _duration_case("exitTime - enterTime")
    )
)
# Rollup inserts per report kind, reading the temp table ``batch`` (file_id + report columns).
_VISIT_MINUTE_ROLLUPS: Final = (
    "INSERT INTO r_count SELECT file_id, enterTime // 60000 AS m, 0, count(*) FROM batch GROUP BY ALL",
    "INSERT INTO r_algorithm SELECT file_id, enterTime // 60000 AS m, algorithmType, count(*) FROM batch GROUP BY ALL",
    _DURATION_INSERT,
    "INSERT INTO r_geo SELECT file_id, enterTime // 60000 AS m, least(floor(latitude), 89)::SMALLINT AS la, "
    "least(floor(longitude), 179)::SMALLINT AS lo, count(*) FROM batch GROUP BY ALL ORDER BY m",
    "INSERT INTO r_poi SELECT file_id, enterTime // 60000 AS m, poiId, user_key, count(*) FROM batch "
    "GROUP BY ALL ORDER BY m",
    "INSERT INTO r_user_day SELECT DISTINCT file_id, (enterTime // 86400000)::INTEGER AS d, 0, user_key FROM batch "
    "ORDER BY d",
    "INSERT INTO dirty_days SELECT DISTINCT (enterTime // 86400000)::INTEGER FROM batch",
)


def _day_variant(sql: str) -> str:
    """The day-grain twin of a minute-grain rollup insert."""
    table = sql.split()[2]
    return sql.replace(f"INSERT INTO {table} ", f"INSERT INTO {table}_d ", 1).replace(
        "// 60000 AS m", "// 86400000 AS m"
    )


_VISIT_ROLLUPS: Final[tuple[str, ...]] = (
    *_VISIT_MINUTE_ROLLUPS,
    *(_day_variant(sql) for sql in _VISIT_MINUTE_ROLLUPS if sql.split()[2] in {"r_algorithm", "r_duration", "r_geo"}),
    "INSERT INTO r_poi_d SELECT file_id, enterTime // 86400000 AS m, poiId, count(*) FROM batch "
    "GROUP BY ALL ORDER BY m",
)
_ACTIVITY_ROLLUPS: Final = (
    "INSERT INTO r_count SELECT file_id, startTime // 60000 AS m, 1, count(*) FROM batch GROUP BY ALL",
    "INSERT INTO r_activity SELECT file_id, startTime // 60000 AS m, activityType, count(*) FROM batch GROUP BY ALL",
    "INSERT INTO r_user_day SELECT DISTINCT file_id, (startTime // 86400000)::INTEGER AS d, 1, user_key FROM batch "
    "ORDER BY d",
    "INSERT INTO dirty_days SELECT DISTINCT (startTime // 86400000)::INTEGER FROM batch",
    "INSERT INTO r_activity_d SELECT file_id, startTime // 86400000 AS m, activityType, count(*) FROM batch "
    "GROUP BY ALL",
)
# Steps of recording a batch's lines in seen/dup (order matters), per kind: the temp table
# ``keyed`` (one row per line: key + rollup cells) is made first by _KEYED[kind].
_KEYED: Final = {
    "visit": "CREATE OR REPLACE TEMP TABLE keyed AS SELECT file_id, 0::TINYINT AS kind, enterTime AS t, "  # noqa: S608 - constants
    "hash(userId, algorithmType, enterTime, exitTime, poiId, latitude, longitude) AS h, "
    "enterTime // 60000 AS minute, NULL::INTEGER AS activity_type, algorithmType AS algorithm_type, "
    "({})::SMALLINT AS bucket, least(floor(latitude), 89)::SMALLINT AS lat, "
    "least(floor(longitude), 179)::SMALLINT AS lon, poiId AS poi_id FROM batch".format(
        _duration_case("exitTime - enterTime")
    ),
    "activity": "CREATE OR REPLACE TEMP TABLE keyed AS SELECT file_id, 1::TINYINT AS kind, startTime AS t, "
    "hash(userId, activityType, startTime, endTime) AS h, startTime // 60000 AS minute, "
    "activityType AS activity_type, NULL::INTEGER AS algorithm_type, NULL::SMALLINT AS bucket, "
    "NULL::SMALLINT AS lat, NULL::SMALLINT AS lon, NULL::BIGINT AS poi_id FROM batch",
}
_DEDUPE_STEPS: Final = (
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
# When a file's rows are dropped: recount the copies of the reports it held.
_DEDUPE_DROP: Final = (
    "CREATE OR REPLACE TEMP TABLE gone AS SELECT DISTINCT kind, t, h FROM seen WHERE file_id = $file",
    "DELETE FROM seen WHERE file_id = $file",
    "CREATE OR REPLACE TEMP TABLE copies AS SELECT g.kind, g.t, g.h, count(s.t) AS n FROM gone g "
    "LEFT JOIN seen s ON s.kind = g.kind AND s.t = g.t AND s.h = g.h GROUP BY ALL",
    "DELETE FROM dup USING copies c WHERE dup.kind = c.kind AND dup.t = c.t AND dup.h = c.h AND c.n <= 1",
    "UPDATE dup SET extra = c.n - 1 FROM copies c WHERE dup.kind = c.kind AND dup.t = c.t AND dup.h = c.h AND c.n > 1",
    "DROP TABLE gone",
    "DROP TABLE copies",
)
# Group keys of each table (everything but file_id and n) for compaction.
_COMPACT: Final = {
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


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentFile:
    """A segment file found on disk."""

    path: Path
    topic: str
    kind: ReportKind
    partition: int
    start_offset: int
    size: int
    closed: bool  # a later segment of the same topic+partition exists
    generation: int = 0  # the partition's log generation (footfall.layout)


@dataclasses.dataclass(slots=True)
class FileState:
    """What the store remembers about one file."""

    file_id: int
    folded_bytes: int
    pieces: int


@dataclasses.dataclass(frozen=True, slots=True)
class RefreshResult:
    """What one :meth:`RollupStore.refresh` did."""

    files_seen: int
    files_folded: int
    reports: dict[str, int]
    bad_lines: int
    bytes_folded: int
    dropped_files: int
    seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    """A half-open report-time range ``[start_ms, end_ms)``, already validated."""

    start_ms: int
    end_ms: int

    @property
    def start_minute(self) -> int:
        return self.start_ms // MINUTE_MS

    @property
    def end_minute(self) -> int:
        """Exclusive. Query ranges are minute-aligned (``dashboard.params``), so exact."""
        return -(-self.end_ms // MINUTE_MS)

    @property
    def first_day(self) -> int:
        return self.start_ms // DAY_MS

    @property
    def last_day(self) -> int:
        """Inclusive: the UTC day holding the range's last millisecond."""
        return (self.end_ms - 1) // DAY_MS

    def whole_days(self) -> Range:
        """The range widened to the UTC days it overlaps."""
        return Range(self.first_day * DAY_MS, (self.last_day + 1) * DAY_MS)


def bucket_for_range(r: Range) -> Bucket:
    """Time-series bucket chosen by the range: minute up to 6 h, hour up to 14 days, day up
    to 1,000 days, month up to 1,000 months, else year (any range of report times: at most
    10,000 points)."""
    span = r.end_ms - r.start_ms
    if span <= 6 * HOUR_MS:
        return "minute"
    if span <= 14 * DAY_MS:
        return "hour"
    if span <= 1000 * DAY_MS:
        return "day"
    if bucket_points(r, "month") <= 1000:
        return "month"
    return "year"


def bucket_points(r: Range, bucket: Bucket) -> int:
    """How many ``bucket``-wide time-series points ``r`` touches."""
    if bucket in _BUCKET_MINUTES:
        width = _BUCKET_MINUTES[bucket]
        return (r.end_minute - 1) // width - r.start_minute // width + 1
    first = _utc(r.start_ms)
    last = _utc(r.end_ms - 1)
    if bucket == "year":
        return last.year - first.year + 1
    return (last.year - first.year) * 12 + last.month - first.month + 1


def _utc(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)


def list_segments(record_directory: Path, topics: dict[str, ReportKind]) -> list[SegmentFile]:
    """Every segment file of ``topics`` (topic -> report kind), with its closed flag."""
    found: list[tuple[Path, str, ReportKind, int, int, int, int]] = []
    for topic, kind in topics.items():
        topic_dir = record_directory / topic
        if not topic_dir.is_dir():
            continue
        for path in topic_dir.glob("date=*/*.jsonl"):
            name = parse_segment_name(path.name)
            if name is None or name.topic != topic:
                continue
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # removed between glob and stat
                continue
            found.append((path, topic, kind, name.partition, name.generation, name.start_offset, size))
    # A partition's files are in log order by (generation, start offset); only the last may grow.
    newest: dict[tuple[str, int], tuple[int, int]] = {}
    for _, topic, _, partition, gen, offset, _ in found:
        key = (topic, partition)
        newest[key] = max(newest.get(key, (-1, -1)), (gen, offset))
    return sorted(
        (
            SegmentFile(p, t, k, part, off, size, closed=(gen, off) < newest[(t, part)], generation=gen)
            for p, t, k, part, gen, off, size in found
        ),
        key=lambda s: (s.topic, s.partition, s.generation, s.start_offset),
    )


@dataclasses.dataclass(slots=True)
class _Piece:
    segment: SegmentFile
    file_id: int
    read_path: Path  # the segment itself, or a scratch copy of the new complete lines
    start: int  # file offset of the piece's first byte
    new_folded: int
    scratch: bool


class RollupStore:
    """The rollup database of one record directory; thread-safe (one writer at a time).

    Args:
        record_directory: the sink's ``--record-directory``.
        database: DuckDB file (created if missing); ``None`` keeps everything in memory.
        topics: topic name -> report kind (``visit``/``activity``).
        batch_bytes: most bytes folded per transaction, also within one large file
            (bounds memory and keeps the dashboard showing progress while it catches
            up on a large backlog); only a single longer line exceeds it.
        threads: DuckDB worker threads.
    """

    def __init__(
        self,
        record_directory: Path,
        database: Path | None,
        topics: dict[str, ReportKind],
        *,
        batch_bytes: int = 256 * 1024 * 1024,
        threads: int = 2,
        memory_limit: str = "1GB",
    ) -> None:
        self.record_directory = record_directory
        self.database = database
        self.topics = dict(topics)
        self.batch_bytes = batch_bytes
        self._threads = threads
        self._memory_limit = memory_limit
        self._con: duckdb.DuckDBPyConnection | None = None
        # Readers' connections are made from this one, never from the writer while it folds.
        self._reader_root: duckdb.DuckDBPyConnection | None = None
        self._reader_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()
        self._local = threading.local()
        self._scratch_dir: Path | None = None
        #: Wall-clock ms at the start of the last completed refresh: every complete
        #: line that had landed by then is in the rollups ("data as of").
        self.as_of_ms: int | None = None
        #: Bumped by every refresh that changed the rollups.
        self.version = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Open (or create) the database; idempotent."""
        if self._con is not None:
            return
        self._stopping.clear()
        try:
            if self.database is not None:
                self.database.parent.mkdir(parents=True, exist_ok=True)
                self._scratch_dir = self.database.parent / (self.database.name + ".scratch")
            else:
                self._scratch_dir = None
            config: dict[str, str | bool | int | float | list[str]] = {
                "threads": str(self._threads),
                "memory_limit": self._memory_limit,
            }
            con = duckdb.connect(str(self.database) if self.database else ":memory:", config=config)
        except (duckdb.Error, OSError) as exc:
            raise StoreError(
                f"cannot open the dashboard database {self.database}: {exc} "
                "(is another dashboard using this record directory? give it its own --state-dir)"
            ) from exc
        self._con = con
        self._migrate(con)
        self._reader_root = con.cursor()
        if self._scratch_dir is None:
            import tempfile

            self._scratch_dir = Path(tempfile.mkdtemp(prefix="footfall-dashboard-"))
        self._scratch_dir.mkdir(parents=True, exist_ok=True)
        for stale in self._scratch_dir.glob("*.jsonl"):
            stale.unlink(missing_ok=True)

    def stop(self) -> None:
        """Close the database; idempotent. A running refresh stops after its current batch."""
        self._stopping.set()
        with self._write_lock:
            if self._con is not None:
                if self._reader_root is not None:
                    self._reader_root.close()
                    self._reader_root = None
                self._con.close()
                self._con = None

    def __enter__(self) -> RollupStore:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is not None and row[0] != str(SCHEMA_VERSION):
            # Rollups are derived data: rebuild from the files rather than migrate.
            log.warning("dashboard database schema changed; rebuilding", extra={"found": row[0]})
            for table in (*_ROLLUP_TABLES, *_DERIVED_TABLES, "files"):
                con.execute(f"DROP TABLE IF EXISTS {table}")
            con.execute("DROP SEQUENCE IF EXISTS file_ids")
            con.execute("DROP SEQUENCE IF EXISTS user_keys")
        con.execute(_SCHEMA)
        con.execute(
            "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
            [str(SCHEMA_VERSION)],
        )

    @property
    def _writer(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StoreError("the rollup store is not started")
        return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection for the calling thread (DuckDB connections are not shared by threads)."""
        root = self._reader_root
        if root is None:
            raise StoreError("the rollup store is not started")
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None or getattr(self._local, "owner", None) is not root:
            with self._reader_lock:
                cur = root.cursor()
            self._local.cursor = cur
            self._local.owner = root
        return cur

    # -- folding ---------------------------------------------------------------

    def refresh(self) -> RefreshResult:
        """Fold every complete line that landed since the last refresh (module docstring)."""
        with self._write_lock:
            return self._refresh()

    def _refresh(self) -> RefreshResult:
        started = time.monotonic()
        as_of = int(time.time() * 1000)
        con = self._writer
        # 1. list the files
        segments = list_segments(self.record_directory, self.topics)
        known = {
            str(path): FileState(fid, folded, pieces)
            for fid, path, folded, pieces in con.execute(
                "SELECT file_id, path, folded_bytes, pieces FROM files"
            ).fetchall()
        }
        # 2. compare with what was folded
        on_disk = {str(s.path) for s in segments}
        dropped = 0
        for path, gone in known.items():
            if path not in on_disk:
                self._drop_file(con, gone.file_id, delete_file_row=True)
                dropped += 1
        pending: list[tuple[SegmentFile, FileState | None]] = []
        for seg in segments:
            state = known.get(str(seg.path))
            if state is not None and seg.size < state.folded_bytes:
                log.warning(
                    "segment shrank; folding it again",
                    extra={"path": str(seg.path), "size": seg.size, "folded": state.folded_bytes},
                )
                self._drop_file(con, state.file_id, delete_file_row=False)
                state = FileState(state.file_id, 0, 0)
            if state is not None and seg.size == state.folded_bytes:
                if seg.closed and state.pieces > 1:
                    self._compact(con, state.file_id)
                continue
            pending.append((seg, state))
        # 3./4. fold in batches
        reports = dict.fromkeys(("visit", "activity"), 0)
        bad = 0
        folded_bytes = 0
        folded_files: set[int] = set()
        queue = collections.deque(pending)
        while queue:
            if self._stopping.is_set():
                break  # shutting down: the rest is folded next time
            try:
                pieces = self._next_batch(con, queue)
                for kind in ("visit", "activity"):
                    of_kind = [p for p in pieces if p.segment.kind == kind]
                    if not of_kind:
                        continue
                    good, broken = self._fold(con, kind, of_kind)
                    reports[kind] += good
                    bad += broken
                    folded_files.update(p.file_id for p in of_kind)
                    folded_bytes += sum(p.new_folded - p.start for p in of_kind)
            finally:
                for scratch in self._scratch_dir.glob("*.jsonl") if self._scratch_dir else ():
                    scratch.unlink(missing_ok=True)
        files_folded = len(folded_files)
        # 5. recount distinct users for the days that changed; relink pairs after drops
        self._recount_days(con)
        self._rebuild_pairs_if_stale(con)
        # 6. compact pieces of segments that are now closed
        for seg, _ in pending:
            if seg.closed:
                row = con.execute("SELECT file_id, pieces FROM files WHERE path = ?", [str(seg.path)]).fetchone()
                if row is not None and row[1] > 1:
                    self._compact(con, row[0])
        if files_folded or dropped or self.as_of_ms is None:
            self.version += 1
        self.as_of_ms = as_of
        return RefreshResult(
            files_seen=len(segments),
            files_folded=files_folded,
            reports=reports,
            bad_lines=bad,
            bytes_folded=folded_bytes,
            dropped_files=dropped,
            seconds=time.monotonic() - started,
        )

    def _next_batch(
        self, con: duckdb.DuckDBPyConnection, queue: collections.deque[tuple[SegmentFile, FileState | None]]
    ) -> list[_Piece]:
        """Take pieces off ``queue`` until they hold ``batch_bytes``; a file cut short goes
        back to the front with its new offset, to continue in the next batch."""
        pieces: list[_Piece] = []
        budget = self.batch_bytes
        while queue and budget > 0:
            seg, state = queue.popleft()
            if state is None:
                state = self._add_file(con, seg)
            piece = self._prepare(seg, state, budget)
            if piece is None:
                continue
            pieces.append(piece)
            budget -= piece.new_folded - piece.start
            if seg.size - state.folded_bytes > budget + (piece.new_folded - piece.start):
                # The budget cut this file short: the rest goes into the next batch.
                queue.appendleft((seg, FileState(state.file_id, piece.new_folded, state.pieces + 1)))
                break
        return pieces

    @staticmethod
    def _add_file(con: duckdb.DuckDBPyConnection, seg: SegmentFile) -> FileState:
        row = con.execute(
            "INSERT INTO files VALUES (nextval('file_ids'), ?, ?, ?, 0, 0, 0, 0) RETURNING file_id",
            [str(seg.path), seg.topic, seg.kind],
        ).fetchone()
        assert row is not None
        return FileState(int(row[0]), 0, 0)

    def _prepare(self, seg: SegmentFile, state: FileState, budget: int) -> _Piece | None:
        """The next piece of ``seg``: its complete lines from the folded offset, at most
        ``budget`` bytes of them (or one line, if a single line is longer)."""
        todo = seg.size - state.folded_bytes
        if seg.closed and state.folded_bytes == 0 and todo <= budget:
            # Closed segments never change: DuckDB may read them in place.
            return _Piece(seg, state.file_id, seg.path, 0, seg.size, scratch=False)
        # Possibly open: copy only the complete lines in [folded, size) - the file may
        # grow while DuckDB reads it, and its last line may be half-written.
        try:
            with seg.path.open("rb") as f:
                f.seek(state.folded_bytes)
                data = f.read(min(todo, budget))
                end = data.rfind(b"\n")
                if end < 0 and len(data) < todo:  # one line longer than the budget
                    data += f.read(todo - len(data))
                    end = data.find(b"\n")
        except FileNotFoundError:
            return None
        if end < 0:
            return None
        assert self._scratch_dir is not None
        scratch = self._scratch_dir / f"{state.file_id}-{state.folded_bytes}.jsonl"
        scratch.write_bytes(data[: end + 1])
        return _Piece(seg, state.file_id, scratch, state.folded_bytes, state.folded_bytes + end + 1, scratch=True)

    def _fold(self, con: duckdb.DuckDBPyConnection, kind: str, pieces: list[_Piece]) -> tuple[int, int]:
        columns = _VISIT_COLUMNS if kind == "visit" else _ACTIVITY_COLUMNS
        time_col = "enterTime" if kind == "visit" else "startTime"
        end_col = "exitTime" if kind == "visit" else "endTime"
        required = [c for c in columns if c not in {"latitude", "longitude"}]
        valid = " AND ".join(f"{c} IS NOT NULL" for c in required) + f" AND {end_col} >= {time_col}"
        if kind == "visit":
            valid += " AND latitude BETWEEN -90 AND 90 AND longitude BETWEEN -180 AND 180"
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("CREATE OR REPLACE TEMP TABLE batch_files (filename VARCHAR, file_id INTEGER)")
            con.executemany("INSERT INTO batch_files VALUES (?, ?)", [[str(p.read_path), p.file_id] for p in pieces])
            con.execute(
                "CREATE OR REPLACE TEMP TABLE raw AS SELECT f.file_id, r.* EXCLUDE (filename) "
                "FROM read_json($files, format = 'newline_delimited', columns = $columns, "
                "ignore_errors = true, filename = true, maximum_object_size = 1048576) r "
                "JOIN batch_files f USING (filename)",
                {"files": [str(p.read_path) for p in pieces], "columns": columns},
            )
            con.execute(f"CREATE OR REPLACE TEMP TABLE valid AS SELECT * FROM raw WHERE {valid}")  # noqa: S608
            con.execute(
                "INSERT INTO users SELECT u, nextval('user_keys') FROM (SELECT DISTINCT userId AS u FROM valid) "
                "WHERE u NOT IN (SELECT user_id FROM users)"
            )
            con.execute(
                "CREATE OR REPLACE TEMP TABLE batch AS SELECT valid.*, users.user_key FROM valid "
                "JOIN users ON users.user_id = valid.userId"
            )
            counts = con.execute("SELECT file_id, count(*) FROM raw GROUP BY file_id").fetchall()
            good_counts = dict(con.execute("SELECT file_id, count(*) FROM batch GROUP BY file_id").fetchall())
            for sql in _VISIT_ROLLUPS if kind == "visit" else _ACTIVITY_ROLLUPS:
                con.execute(sql)
            if kind == "visit":
                for sql in _PAIR_STEPS:
                    con.execute(sql)
            con.execute(_KEYED[kind])
            for sql in _DEDUPE_STEPS:
                con.execute(sql)
            lines = dict(counts)
            con.executemany(
                "UPDATE files SET folded_bytes = ?, pieces = pieces + 1, lines = lines + ?, "
                "bad_lines = bad_lines + ? WHERE file_id = ?",
                [
                    [
                        p.new_folded,
                        good_counts.get(p.file_id, 0),
                        lines.get(p.file_id, 0) - good_counts.get(p.file_id, 0),
                        p.file_id,
                    ]
                    for p in pieces
                ],
            )
            con.execute("DROP TABLE raw")
            con.execute("DROP TABLE valid")
            con.execute("DROP TABLE batch")
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        good = sum(good_counts.values())
        return good, sum(lines.values()) - good

    def _rebuild_pairs_if_stale(self, con: duckdb.DuckDBPyConnection) -> None:
        if con.execute("SELECT 1 FROM meta WHERE key = 'pairs_stale'").fetchone() is None:
            return
        started = time.monotonic()
        con.execute("BEGIN TRANSACTION")
        try:
            for sql in _PAIR_REBUILD:
                con.execute(sql)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        log.info("rebuilt pair_minutes after dropped rows", extra={"seconds": round(time.monotonic() - started, 3)})

    def _recount_days(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("BEGIN TRANSACTION")
        try:
            days = [d for (d,) in con.execute("SELECT DISTINCT day FROM dirty_days ORDER BY day").fetchall()]
            if days:
                # The BETWEEN lets zonemaps skip row groups (rows are clustered by day).
                where = "day BETWEEN $lo AND $hi AND list_contains($days, day)"
                params = {"lo": days[0], "hi": days[-1], "days": days}
                con.execute(f"DELETE FROM c_user_day WHERE {where}", params)  # noqa: S608
                con.execute(
                    "INSERT INTO c_user_day "  # noqa: S608 - where is a constant
                    f"SELECT day, kind, count(DISTINCT user_key) FROM r_user_day WHERE {where} GROUP BY day, kind "
                    f"UNION ALL SELECT day, 2, count(DISTINCT user_key) FROM r_user_day WHERE {where} GROUP BY day",
                    params,
                )
                con.execute("DELETE FROM dirty_days")
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise

    def _drop_file(self, con: duckdb.DuckDBPyConnection, file_id: int, *, delete_file_row: bool) -> None:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("INSERT INTO dirty_days SELECT DISTINCT day FROM r_user_day WHERE file_id = ?", [file_id])
            for sql in _DEDUPE_DROP:
                con.execute(sql, {"file": file_id} if "$file" in sql else None)
            con.execute("INSERT OR REPLACE INTO meta VALUES ('pairs_stale', '1')")
            for table in _ROLLUP_TABLES:
                con.execute(f"DELETE FROM {table} WHERE file_id = ?", [file_id])  # noqa: S608
            if delete_file_row:
                con.execute("DELETE FROM files WHERE file_id = ?", [file_id])
            else:
                con.execute(
                    "UPDATE files SET folded_bytes = 0, pieces = 0, lines = 0, bad_lines = 0 WHERE file_id = ?",
                    [file_id],
                )
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise

    def _compact(self, con: duckdb.DuckDBPyConnection, file_id: int) -> None:
        """Merge the per-piece rows of a closed segment folded in several pieces."""
        con.execute("BEGIN TRANSACTION")
        try:
            for table, keys in _COMPACT.items():
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE compacted AS SELECT file_id, {keys}, sum(n)::BIGINT AS n "  # noqa: S608
                    f"FROM {table} WHERE file_id = ? GROUP BY file_id, {keys}",
                    [file_id],
                )
                con.execute(f"DELETE FROM {table} WHERE file_id = ?", [file_id])  # noqa: S608
                con.execute(f"INSERT INTO {table} SELECT * FROM compacted")  # noqa: S608
            con.execute(
                "CREATE OR REPLACE TEMP TABLE compacted AS SELECT DISTINCT * FROM r_user_day WHERE file_id = ?",
                [file_id],
            )
            con.execute("DELETE FROM r_user_day WHERE file_id = ?", [file_id])
            con.execute("INSERT INTO r_user_day SELECT * FROM compacted")
            con.execute("DROP TABLE compacted")
            con.execute("UPDATE files SET pieces = 1 WHERE file_id = ?", [file_id])
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise

    # -- queries (all values bound as parameters) ------------------------------

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
        """Reports per bucket and kind: ``[{"t": bucket start ms, "visit": n, "activity": n}]``.

        ``dedupe`` counts each distinct report once (every method taking it does the same).
        """
        params: dict[str, Any] = {"lo": r.start_minute, "hi": r.end_minute, "kinds": [_kind_code(k) for k in kinds]}
        source = "r_count"
        if dedupe:
            source = _DEDUPED_COUNT
        if bucket in _BUCKET_MINUTES:
            start = "minute // $w * $w * 60000"
            params["w"] = _BUCKET_MINUTES[bucket]
        else:  # calendar buckets (UTC)
            start = "epoch_ms(date_trunc($part, epoch_ms(minute * 60000)))"
            params["part"] = bucket
        rows = self._rows(
            f"SELECT {start} AS t, "  # noqa: S608 - start is one of two constants
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
        first_day, end_day = -(-lo // 1440), hi // 1440  # whole days: [first_day, end_day)
        minute_sql = f"SELECT {columns}, n FROM {table} WHERE minute >= ? AND minute < ?"  # noqa: S608
        if first_day >= end_day:
            sql, params = minute_sql, [lo, hi]
        else:
            day_sql = f"SELECT {columns}, n FROM {table}_d WHERE day >= ? AND day < ?"  # noqa: S608
            sql = f"{day_sql} UNION ALL {minute_sql} UNION ALL {minute_sql}"
            params = [first_day, end_day, lo, first_day * 1440, end_day * 1440, hi]
        if dedupe:
            sql += f" UNION ALL SELECT {columns}, -extra FROM dup WHERE kind = ? AND minute >= ? AND minute < ?"  # noqa: S608
            params += [1 if table == "r_activity" else 0, lo, hi]
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
        so the range counted is :func:`day_range` of ``r``."""
        kind = 2 if len(kinds) > 1 else _kind_code(kinds[0])
        rows = self._rows(
            "SELECT day, users FROM c_user_day WHERE day >= ? AND day <= ? AND kind = ? AND users > 0 ORDER BY day",
            [r.first_day, r.last_day, kind],
        )
        return [
            {"day": (dt.date(1970, 1, 1) + dt.timedelta(days=int(d))).isoformat(), "users": int(u)} for d, u in rows
        ]


# r_count with each report's extra copies subtracted (same columns the time series reads).
_DEDUPED_COUNT: Final = "(SELECT minute, kind, n FROM r_count UNION ALL SELECT minute, kind, -extra FROM dup)"


def _kind_code(kind: ReportKind) -> int:
    return 0 if kind == "visit" else 1
