"""The API answers for exactly the range asked: every endpoint against independent SQL.

The oracle is DuckDB run directly over the landed files (``read_json`` of every segment),
with none of the dashboard's rollups or code. The record directory has what broke the
dashboard before: a visit at ``enterTime=0`` (auto buckets over ~50 years), report times
off the minute, a retried report landed again in another file (distinct counting), and a
partition whose log started over (a generation-1 segment).
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import msgspec
import pytest

from dashboard.params import MAX_POINTS
from footfall.layout import segment_path
from footfall.reports import MAX_EPOCH_MS, Activity, Visit, encode_report
from tests.dashboard.conftest import make_records, start_server
from tests.dashboard.fixtures import DURATION_EDGES_MINUTES, MINUTE

HOUR = 3_600_000
DAY = 86_400_000
#: The page's presets (dashboard.js PRESETS).
PRESETS = {"1h": HOUR, "6h": 6 * HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
LANDED = dt.date(2026, 1, 1)
_DUCKDB_TYPES: dict[type, str] = {
    msgspec.inspect.IntType: "BIGINT",
    msgspec.inspect.FloatType: "DOUBLE",
    msgspec.inspect.UUIDType: "UUID",
}


def wire_columns(report: type[Visit | Activity]) -> dict[str, str]:
    """DuckDB types of every field of a wire model: the oracle reads whole reports, whatever
    subset of fields the dashboard reads (a distinct report is a distinct wire record)."""
    info = msgspec.inspect.type_info(report)
    assert isinstance(info, msgspec.inspect.StructType)
    columns = {}
    for field in info.fields:
        kind = field.type.type if isinstance(field.type, msgspec.inspect.Metadata) else field.type
        columns[field.encode_name] = _DUCKDB_TYPES[type(kind)]
    return columns


def preset_range(span: int, now_ms: int) -> tuple[int, int]:
    """dashboard.js ``presetRange``: the ``span`` ending with the current (whole) minute."""
    to = now_ms // MINUTE * MINUTE + MINUTE
    return to - span, to


def _write(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def add_hard_cases(records: Path, rng: random.Random) -> Callable[[], None]:
    """Off-minute times, enterTime=0 and generation-1/2 segments; returns what lands the
    retried copies (of landed lines, in other partitions' files, one report 3 more times)."""
    visit_lines = [line for p in sorted((records / "visit").rglob("*.jsonl")) for line in p.read_bytes().splitlines()]
    act_lines = [line for p in sorted((records / "activity").rglob("*.jsonl")) for line in p.read_bytes().splitlines()]
    pois = [rng.getrandbits(63) for _ in range(6)]
    off_minute: list[bytes] = []
    for _ in range(60):
        enter = 1_514_764_800_000 + rng.randrange(3 * DAY)  # any millisecond of the fixture's days
        off_minute.append(
            encode_report(
                Visit(
                    dataVer=1,
                    userId=uuid.UUID(int=rng.getrandbits(128), version=4),
                    algorithmType=rng.choice((1, 2, 4)),
                    enterTime=enter,
                    exitTime=enter + rng.randrange(0, 30 * HOUR),
                    poiId=rng.choice(pois),
                    latitude=rng.uniform(-90, 90),
                    longitude=rng.uniform(-180, 180),
                )
            )
        )
    epoch_visit = Visit(
        dataVer=1,
        userId=uuid.UUID(int=rng.getrandbits(128), version=4),
        algorithmType=1,
        enterTime=0,
        exitTime=40 * MINUTE,
        poiId=pois[0],
        latitude=10.5,
        longitude=20.5,
    )
    off_minute.append(encode_report(epoch_visit))
    # A log that started over: generation 1 of partition 0, from offset 0.
    _write(segment_path(records, "visit", LANDED, 0, 0, generation=1), off_minute)
    acts: list[bytes] = []
    for _ in range(40):
        start = 1_514_764_800_000 + rng.randrange(3 * DAY)
        acts.append(
            encode_report(
                Activity(
                    dataVer=1,
                    userId=uuid.UUID(int=rng.getrandbits(128), version=4),
                    activityType=rng.choice((1, 2, 3, 7)),
                    startTime=start,
                    endTime=start + rng.randrange(HOUR),
                    startLatitude=1.0,
                    startLongitude=2.0,
                    endLatitude=3.0,
                    endLongitude=4.0,
                )
            )
        )
    _write(segment_path(records, "activity", LANDED, 1, 0, generation=2), acts)
    dup_visits = rng.sample(visit_lines, 25) + rng.sample(off_minute, 5) + [visit_lines[0]] * 3
    dup_acts = rng.sample(act_lines, 20) + [acts[0]] * 2

    def land_retries() -> None:
        _write(segment_path(records, "visit", LANDED + dt.timedelta(days=1), 7, 0), dup_visits)
        _write(segment_path(records, "activity", LANDED + dt.timedelta(days=1), 7, 0), dup_acts)

    return land_retries


class Oracle:
    """Every view, in SQL straight over the files."""

    def __init__(self, records: Path) -> None:
        self.con = duckdb.connect()
        for name, topic, columns in (("v", "visit", wire_columns(Visit)), ("a", "activity", wire_columns(Activity))):
            self.con.execute(
                f"CREATE TABLE {name}_lines AS SELECT * FROM read_json($glob, format = 'newline_delimited', "
                "hive_partitioning = false, "
                "columns = $columns)",
                {"glob": str(records / topic / "date=*" / "*.jsonl"), "columns": columns},
            )
            self.con.execute(f"CREATE TABLE {name}_distinct AS SELECT DISTINCT * FROM {name}_lines")

    def _q(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params).fetchall()

    def tables(self, counting: str) -> tuple[str, str]:
        suffix = "lines" if counting == "lines" else "distinct"
        return f"v_{suffix}", f"a_{suffix}"

    def timeseries(self, lo: int, hi: int, bucket: str, kind: str, counting: str) -> list[dict[str, int]]:
        v, a = self.tables(counting)
        parts = []
        if kind in {"all", "visit"}:
            parts.append(f"SELECT enterTime AS t, 1 AS isv FROM {v}")
        if kind in {"all", "activity"}:
            parts.append(f"SELECT startTime AS t, 0 AS isv FROM {a}")
        widths = {"minute": MINUTE, "hour": HOUR, "day": DAY}
        if bucket in widths:
            start = f"t // {widths[bucket]} * {widths[bucket]}"
        else:
            start = f"epoch_ms(date_trunc('{bucket}', make_timestamp(t * 1000)))"
        rows = self._q(
            f"SELECT {start} AS b, count(*) FILTER (WHERE isv = 1), count(*) FILTER (WHERE isv = 0) "
            f"FROM ({' UNION ALL '.join(parts)}) WHERE t >= ? AND t < ? GROUP BY b ORDER BY b",
            [lo, hi],
        )
        return [{"t": b, "visit": nv, "activity": na} for b, nv, na in rows]

    def breakdown(self, lo: int, hi: int, endpoint: str, counting: str) -> list[dict[str, int]]:
        v, a = self.tables(counting)
        table, column, time = (
            (a, "activityType", "startTime") if endpoint == "activity-types" else (v, "algorithmType", "enterTime")
        )
        rows = self._q(
            f"SELECT {column}, count(*) FROM {table} WHERE {time} >= ? AND {time} < ? GROUP BY 1 ORDER BY 1", [lo, hi]
        )
        return [{"type": k, "count": n} for k, n in rows]

    def durations(self, lo: int, hi: int, counting: str) -> list[int]:
        v, _ = self.tables(counting)
        lengths = self._q(f"SELECT exitTime - enterTime FROM {v} WHERE enterTime >= ? AND enterTime < ?", [lo, hi])
        counts = [0] * len(DURATION_EDGES_MINUTES)
        for (length,) in lengths:
            counts[bisect.bisect_right([e * MINUTE for e in DURATION_EDGES_MINUTES], length) - 1] += 1
        return counts

    def top_pois(self, lo: int, hi: int, by: str, limit: int, counting: str) -> list[dict[str, Any]]:
        v, _ = self.tables(counting)
        order = "visits" if by == "visits" else "users"
        rows = self._q(
            f"SELECT poiId, count(*) AS visits, count(DISTINCT userId) AS users FROM {v} "
            f"WHERE enterTime >= ? AND enterTime < ? GROUP BY poiId ORDER BY {order} DESC, poiId LIMIT ?",
            [lo, hi, limit],
        )
        return [{"poiId": str(p), "visits": n, "users": u} for p, n, u in rows]

    def geo(self, lo: int, hi: int, cell: int, counting: str) -> list[list[int]]:
        v, _ = self.tables(counting)
        rows = self._q(
            "SELECT floor(least(floor(longitude), 179) / ?)::INTEGER * ? AS x, "
            "floor(least(floor(latitude), 89) / ?)::INTEGER * ? AS y, count(*) "
            f"FROM {v} WHERE enterTime >= ? AND enterTime < ? GROUP BY x, y ORDER BY x, y",
            [cell, cell, cell, cell, lo, hi],
        )
        return [list(r) for r in rows]

    def unique_users(self, lo: int, hi: int, kind: str) -> tuple[int, int, list[dict[str, Any]]]:
        first, end = lo // DAY * DAY, ((hi - 1) // DAY + 1) * DAY
        parts = []
        if kind in {"all", "visit"}:
            parts.append("SELECT userId, enterTime AS t FROM v_lines")
        if kind in {"all", "activity"}:
            parts.append("SELECT userId, startTime AS t FROM a_lines")
        rows = self._q(
            f"SELECT t // {DAY} AS d, count(DISTINCT userId) FROM ({' UNION ALL '.join(parts)}) "
            "WHERE t >= ? AND t < ? GROUP BY d ORDER BY d",
            [first, end],
        )
        days = [{"day": (dt.date(1970, 1, 1) + dt.timedelta(days=d)).isoformat(), "users": n} for d, n in rows]
        return first, end, days

    def totals(self, counting: str) -> dict[str, int]:
        v, a = self.tables(counting)
        return {
            "visit": self._q(f"SELECT count(*) FROM {v}", [])[0][0],
            "activity": self._q(f"SELECT count(*) FROM {a}", [])[0][0],
        }

    def extent(self) -> tuple[int, int]:
        lo, hi = self._q(
            "SELECT min(t), max(t) FROM (SELECT enterTime AS t FROM v_lines UNION ALL SELECT startTime FROM a_lines)",
            [],
        )[0]
        return lo // MINUTE * MINUTE, (hi // MINUTE + 1) * MINUTE


@dataclasses.dataclass
class Hard:
    url: str
    oracle: Oracle
    seed: int


@pytest.fixture(scope="module")
def hard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hard]:
    """A real ``python -m dashboard`` over the hard cases; the retried copies land after its
    first fold, so their duplicates are found across refreshes."""
    seed = random.randrange(1 << 30)
    print(f"exact-ranges seed: {seed}")
    records = make_records(tmp_path_factory.mktemp("exact") / "records", seed, users=8, days=3)
    land_retries = add_hard_cases(records, random.Random(seed))
    first = Oracle(records).totals("lines")
    server = start_server(records)
    try:
        _wait_for_totals(server.url, first)
        land_retries()
        oracle = Oracle(records)
        _wait_for_totals(server.url, oracle.totals("lines"))
        yield Hard(server.url, oracle, seed)
    finally:
        assert server.stop() == 0


@pytest.fixture
async def api(hard: Hard) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hard.url, timeout=30) as client:
        yield client


def _wait_for_totals(url: str, want: dict[str, int]) -> None:
    deadline = time.monotonic() + 30
    while (got := httpx.get(url + "/api/v1/summary").json()["data"]["reports"]) != want:
        assert time.monotonic() < deadline, f"the dashboard counts {got}, the files hold {want}"
        time.sleep(0.05)


async def _get(api: httpx.AsyncClient, path: str, params: dict[str, Any]) -> dict[str, Any]:
    resp = await api.get(path, params={k: v for k, v in params.items() if v is not None})
    assert resp.status_code == 200, f"{path} {params}: {resp.text}"
    body: dict[str, Any] = resp.json()
    return body


async def check_every_endpoint(
    api: httpx.AsyncClient, oracle: Oracle, lo: int | None, hi: int | None, rng: random.Random
) -> None:
    """Each endpoint against the oracle over the range the answer echoes (counting drawn at random)."""
    ext_lo, ext_hi = oracle.extent()
    a = ext_lo if lo is None else lo
    b = ext_hi if hi is None else hi
    for counting in [rng.choice(("lines", "distinct"))]:
        q = {"from": lo, "to": hi, "counting": counting}
        kind = rng.choice(("all", "visit", "activity"))
        ts = await _get(api, "/api/v1/timeseries", {**q, "type": kind})
        assert (ts["from"], ts["to"], ts["type"], ts["counting"]) == (a, b, kind, counting)
        assert ts["data"] == oracle.timeseries(a, b, ts["bucket"], kind, counting), (q, ts["bucket"])
        assert len(ts["data"]) <= MAX_POINTS
        for endpoint in ("activity-types", "algorithm-types"):
            body = await _get(api, f"/api/v1/{endpoint}", q)
            assert (body["from"], body["to"]) == (a, b)
            assert body["data"] == oracle.breakdown(a, b, endpoint, counting), (endpoint, q)
        body = await _get(api, "/api/v1/visit-durations", q)
        assert [d["count"] for d in body["data"]] == oracle.durations(a, b, counting), q
        cell = rng.choice((1, 2, 5, 10))
        body = await _get(api, "/api/v1/geo", {**q, "cell": cell})
        assert body["data"] == oracle.geo(a, b, cell, counting), q
        for by in ("visits", "users"):
            limit = rng.choice((1, 5, 100))
            body = await _get(api, "/api/v1/top-pois", {**q, "by": by, "limit": limit})
            assert body["data"] == oracle.top_pois(a, b, by, limit, counting), (by, limit, q)
        body = await _get(api, "/api/v1/unique-users", {**q, "type": kind})
        first, end, days = oracle.unique_users(a, b, kind)
        assert (body["from"], body["to"], body["grain"]) == (first, end, "day")
        assert body["data"] == days, q


@pytest.mark.slow
async def test_presets_and_all_data_equal_sql(hard: Hard, api: httpx.AsyncClient) -> None:
    oracle = hard.oracle
    rng = random.Random(hard.seed)
    summary = (await _get(api, "/api/v1/summary", {}))["data"]
    assert summary["reports"] == oracle.totals("lines")
    assert summary["distinctReports"] == oracle.totals("distinct")
    assert summary["distinctReports"] != summary["reports"]  # the fixture has retried copies
    assert summary["firstMs"] == 0  # the enterTime=0 visit
    for _ in range(3):  # all data, with both countings almost surely
        await check_every_endpoint(api, oracle, None, None, rng)
    _, last = oracle.extent()
    # "now" inside the data, at an odd millisecond, and just after the last report.
    for now in (1_514_764_800_000 + 30 * HOUR + 12_345, last + 5_000, last - 1):
        for span in PRESETS.values():
            lo, hi = preset_range(span, now)
            await check_every_endpoint(api, oracle, lo, hi, rng)


@pytest.mark.slow
async def test_random_ranges_equal_sql(hard: Hard, api: httpx.AsyncClient) -> None:
    oracle = hard.oracle
    rng = random.Random(hard.seed + 1)
    first, last = 1_514_764_800_000 // MINUTE - 60, (1_514_764_800_000 + 3 * DAY) // MINUTE + 60
    for _ in range(25):
        lo = rng.randrange(first, last) * MINUTE
        hi = lo + rng.choice((1, 7, 59, 61, 360, 361, 1439, 1441, 2 * 1440 + 17, 20 * 1440)) * MINUTE
        await check_every_endpoint(api, oracle, lo, hi, rng)
    # Ranges reaching back to the epoch (auto picks month or year buckets) and open ends.
    edges: list[tuple[int | None, int | None]] = [
        (0, last * MINUTE),
        (0, MAX_EPOCH_MS + 1),
        (None, 1_514_764_800_000 + DAY),
        (60_000, None),
    ]
    for start, end in edges:
        await check_every_endpoint(api, oracle, start, end, rng)


async def test_auto_bucket_always_answers_and_explicit_buckets_are_exact(hard: Hard, api: httpx.AsyncClient) -> None:
    oracle = hard.oracle
    for lo, hi, want in (
        (0, 2 * MINUTE, "minute"),
        (0, 14 * DAY, "hour"),
        (0, 1000 * DAY, "day"),
        (0, 1_514_764_800_000 + 3 * DAY, "month"),
        (0, MAX_EPOCH_MS + 1, "year"),
    ):
        body = await _get(api, "/api/v1/timeseries", {"from": lo, "to": hi})
        assert body["bucket"] == want, (lo, hi)
    for bucket in ("day", "month", "year"):
        body = await _get(api, "/api/v1/timeseries", {"bucket": bucket})
        assert body["bucket"] == bucket
        assert body["data"] == oracle.timeseries(0, oracle.extent()[1], bucket, "all", "lines")


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/api/v1/timeseries", {"from": "1514764812345"}, "from: 1514764812345 is not on a whole minute"),
        ("/api/v1/geo", {"to": "2018-01-01T00:00:30Z"}, "to: 2018-01-01T00:00:30Z is not on a whole minute"),
        ("/api/v1/algorithm-types", {"type": "activity"}, "unknown parameter 'type'"),
        ("/api/v1/activity-types", {"type": "visit"}, "unknown parameter 'type'"),
        ("/api/v1/visit-durations", {"type": "all"}, "unknown parameter 'type'"),
        ("/api/v1/top-pois", {"type": "visit"}, "unknown parameter 'type'"),
        ("/api/v1/geo", {"type": "visit"}, "unknown parameter 'type'"),
        ("/api/v1/geo", {"counting": "unique"}, "counting: expected one of lines, distinct"),
    ],
)
async def test_unaligned_ranges_and_type_where_it_does_not_apply_are_400(
    api: httpx.AsyncClient, path: str, params: dict[str, str], message: str
) -> None:
    resp = await api.get(path, params=params)
    assert resp.status_code == 400, resp.text
    assert message in resp.json()["error"]
