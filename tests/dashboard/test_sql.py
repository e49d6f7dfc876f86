"""The SQL fragments the fold and the queries are composed of, run in DuckDB against
calendar arithmetic done by ``datetime`` (an independent oracle)."""

from __future__ import annotations

import bisect
import datetime as dt
from typing import Any

import duckdb
import pytest

from dashboard.queries import bucket_start
from dashboard.ranges import BUCKETS, Bucket
from dashboard.rollups import GRAINS, ROLLUPS, Grain, bucket_of, duration_case
from dashboard.schema import GROUP_KEYS, ReportKind, migrate
from tests.dashboard.fixtures import DURATION_EDGES_MINUTES, MINUTE

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: Report times around calendar edges: a leap day, a year's last millisecond, the epoch.
TIMES = [
    dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2018, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2018, 1, 1, 0, 0, 59, 999_000, tzinfo=dt.UTC),
    dt.datetime(2020, 2, 29, 23, 59, 59, 999_000, tzinfo=dt.UTC),
    dt.datetime(2020, 3, 1, 0, 1, tzinfo=dt.UTC),
    dt.datetime(2025, 12, 31, 23, 59, 59, 999_000, tzinfo=dt.UTC),
    dt.datetime(2026, 6, 15, 13, 37, 12, 345_000, tzinfo=dt.UTC),
]


def _ms(t: dt.datetime) -> int:
    return (t - EPOCH) // dt.timedelta(milliseconds=1)


def _eval(sql: str, params: dict[str, Any], source: str = "") -> Any:
    row = duckdb.connect().execute(f"SELECT {sql} {source}", params).fetchone()
    assert row is not None
    return row[0]


def _truncate(t: dt.datetime, unit: str) -> dt.datetime:
    if unit == "minute":
        return t.replace(second=0, microsecond=0)
    if unit == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    if unit == "day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "month":
        return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return t.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)


@pytest.mark.parametrize("grain", list(GRAINS))
@pytest.mark.parametrize("t", TIMES, ids=str)
def test_bucket_of_a_grain_is_the_utc_minute_or_day_of_the_time(grain: Grain, t: dt.datetime) -> None:
    start = _truncate(t, grain)
    width = dt.timedelta(minutes=1) if grain == "minute" else dt.timedelta(days=1)
    want = (start - EPOCH) // width  # minutes or days since the epoch
    assert _eval(bucket_of("$t", grain), {"t": _ms(t)}) == want


@pytest.mark.parametrize("bucket", BUCKETS)
@pytest.mark.parametrize("t", TIMES, ids=str)
def test_bucket_start_is_the_utc_start_of_the_bucket(bucket: Bucket, t: dt.datetime) -> None:
    sql, params = bucket_start(bucket)
    minute = _ms(t) // MINUTE  # what the rollups store
    source = "FROM (SELECT $minute::BIGINT AS minute)"
    assert _eval(sql, {**params, "minute": minute}, source) == _ms(_truncate(t, bucket))


def test_duration_case_puts_each_length_in_its_histogram_bucket() -> None:
    edges_ms = [e * MINUTE for e in DURATION_EDGES_MINUTES]
    lengths = sorted({0, 1, *edges_ms, *(e - 1 for e in edges_ms[1:]), *(e + 1 for e in edges_ms), 10**12})
    for length in lengths:
        want = bisect.bisect_right(edges_ms, length) - 1
        assert _eval(duration_case("$d"), {"d": length}) == want, length


def test_every_rollup_statement_runs_on_a_batch_and_counts_it() -> None:
    """Each kind's composed inserts run against the real schema and count every report once."""
    con = duckdb.connect()
    migrate(con)
    t = _ms(TIMES[-1])
    batches: dict[ReportKind, str] = {
        "visit": f"SELECT 1 AS file_id, 7 AS user_key, uuid() AS userId, 2 AS algorithmType, {t} AS enterTime, "
        f"{t + 50 * MINUTE} AS exitTime, 99 AS poiId, 10.5 AS latitude, -20.5 AS longitude",
        "activity": f"SELECT 2 AS file_id, 7 AS user_key, uuid() AS userId, 4 AS activityType, {t} AS startTime, "
        f"{t + MINUTE} AS endTime",
    }
    for kind, select in batches.items():
        con.execute(f"CREATE OR REPLACE TEMP TABLE batch AS {select}")
        for sql in ROLLUPS[kind]:
            con.execute(sql)
    minute, day = _ms(TIMES[-1]) // MINUTE, _ms(_truncate(TIMES[-1], "day")) // (1440 * MINUTE)
    assert con.execute("SELECT file_id, minute, kind, n FROM r_count ORDER BY kind").fetchall() == [
        (1, minute, 0, 1),
        (2, minute, 1, 1),
    ]
    assert con.execute("SELECT day, algorithm_type, n FROM r_algorithm_d").fetchall() == [(day, 2, 1)]
    assert con.execute("SELECT bucket FROM r_duration").fetchall() == [(DURATION_EDGES_MINUTES.index(45),)]
    assert con.execute("SELECT lat, lon FROM r_geo_d").fetchall() == [(10, -21)]
    for table in GROUP_KEYS:  # every row in the bucket of its grain
        column = "day" if table.endswith("_d") else "minute"
        assert con.execute(f"SELECT DISTINCT {column} FROM {table}").fetchall() == [
            (day if column == "day" else minute,)
        ], table
    assert con.execute("SELECT minute, poi_id, user_key FROM r_poi").fetchall() == [(minute, 99, 7)]
    assert con.execute("SELECT day, activity_type FROM r_activity_d").fetchall() == [(day, 4)]
    assert con.execute("SELECT day, kind, user_key FROM r_user_day ORDER BY kind").fetchall() == [
        (day, 0, 7),
        (day, 1, 7),
    ]
