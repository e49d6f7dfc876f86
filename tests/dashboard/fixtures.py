"""Fixture record directories, and the plain-Python aggregates the API must agree with.

The writer lays files out exactly as the sink does
(``<dir>/<topic>/date=YYYY-MM-DD/<topic>+<partition>+<offset:020d>.jsonl``); the
``expected_*`` functions read the files back with ``json`` and compute each view
independently of DuckDB and of the dashboard's code.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import random
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from footfall.generator import day_start_ms, original_activities, original_visits, user_id
from footfall.layout import segment_path
from footfall.reports import Activity, Visit, encode_report

MINUTE = 60_000
DAY = 86_400_000
DURATION_EDGES_MINUTES = (0, 5, 10, 15, 20, 30, 40, 45, 60, 90, 120, 180, 240, 480, 720, 1440)


def generate(seed: int, users: int, days: int, start: dt.date) -> tuple[list[Visit], list[Activity]]:
    """Original-profile reports, with some visit lengths and POIs varied so every chart has shape."""
    rng = random.Random(seed)
    visits: list[Visit] = []
    activities: list[Activity] = []
    pois = [rng.getrandbits(63) for _ in range(25)]
    for _ in range(users):
        uid = user_id(rng)
        for day in range(days):
            day_ms = day_start_ms(start, day)
            for v in original_visits(rng, uid, day_ms):
                # Zipf-ish POIs and varied lengths/minutes (the original profile has neither).
                poi = pois[min(int(rng.paretovariate(1.2)) - 1, len(pois) - 1)]
                enter = v.enterTime + rng.randrange(0, 90) * MINUTE
                visits.append(
                    Visit(
                        dataVer=v.dataVer,
                        userId=v.userId,
                        algorithmType=v.algorithmType,
                        enterTime=enter,
                        exitTime=enter + rng.choice((3, 12, 40, 40, 75, 200, 1500)) * MINUTE,
                        poiId=poi,
                        latitude=v.latitude,
                        longitude=v.longitude,
                    )
                )
            activities.extend(original_activities(rng, uid, day_ms))
    return visits, activities


def write_segments(
    directory: Path,
    topic: str,
    reports: Iterable[Visit | Activity],
    *,
    partitions: int = 2,
    per_file: int = 100,
    first_offset: int = 0,
) -> list[Path]:
    """Write reports as the sink would, ``per_file`` lines per segment; returns the files written."""
    by_part: dict[int, list[bytes]] = defaultdict(list)
    for r in reports:
        by_part[zlib.crc32(r.userId.bytes) % partitions].append(encode_report(r))
    day = dt.date(2026, 1, 1)  # the landing date (Kafka timestamp), unrelated to report time
    written = []
    for part, lines in sorted(by_part.items()):
        for i in range(0, len(lines), per_file):
            path = segment_path(directory, topic, day, part, first_offset + i)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"".join(line + b"\n" for line in lines[i : i + per_file]))
            written.append(path)
    return written


def read_reports(directory: Path, topic: str) -> Iterator[dict[str, Any]]:
    """Every complete, valid JSON line of a topic's segment files."""
    for path in sorted((directory / topic).glob("date=*/*.jsonl")):
        data = path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        for line in complete.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "userId" in obj:
                yield obj


def _in(t: int, lo: int, hi: int) -> bool:
    """Minute-snapped range test, as documented by the API."""
    return lo // MINUTE <= t // MINUTE < -(-hi // MINUTE)


def expected(directory: Path, lo: int, hi: int, types: tuple[str, ...] = ("visit", "activity")) -> dict[str, Any]:
    """Every view of the API, computed in plain Python over the files."""
    visits = [v for v in read_reports(directory, "visit") if _in(v["enterTime"], lo, hi)]
    acts = [a for a in read_reports(directory, "activity") if _in(a["startTime"], lo, hi)]
    span = hi - lo
    width = 1 if span <= 6 * 3_600_000 else 60 if span <= 14 * DAY else 1440
    series: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    if "visit" in types:
        for v in visits:
            series[v["enterTime"] // MINUTE // width * width * MINUTE][0] += 1
    if "activity" in types:
        for a in acts:
            series[a["startTime"] // MINUTE // width * width * MINUTE][1] += 1
    durations = Counter(
        bisect.bisect_right(DURATION_EDGES_MINUTES, (v["exitTime"] - v["enterTime"]) / MINUTE) - 1 for v in visits
    )
    poi_visits: Counter[int] = Counter(v["poiId"] for v in visits)
    poi_users: dict[int, set[str]] = defaultdict(set)
    for v in visits:
        poi_users[v["poiId"]].add(v["userId"])
    geo: Counter[tuple[int, int]] = Counter()
    for v in visits:
        lat = min(int(v["latitude"] // 1), 89)
        lon = min(int(v["longitude"] // 1), 179)
        geo[(lon, lat)] += 1
    # unique users per day: whole UTC days overlapping the range
    first, last = lo // DAY, (hi - 1) // DAY
    users: dict[int, set[str]] = defaultdict(set)
    if "visit" in types:
        for v in read_reports(directory, "visit"):
            if first <= v["enterTime"] // DAY <= last:
                users[v["enterTime"] // DAY].add(v["userId"])
    if "activity" in types:
        for a in read_reports(directory, "activity"):
            if first <= a["startTime"] // DAY <= last:
                users[a["startTime"] // DAY].add(a["userId"])
    return {
        "timeseries": [{"t": t, "visit": c[0], "activity": c[1]} for t, c in sorted(series.items())],
        "activity-types": [
            {"type": k, "count": n} for k, n in sorted(Counter(a["activityType"] for a in acts).items())
        ],
        "algorithm-types": [
            {"type": k, "count": n} for k, n in sorted(Counter(v["algorithmType"] for v in visits).items())
        ],
        "visit-durations": [durations.get(i, 0) for i in range(len(DURATION_EDGES_MINUTES))],
        "poi-visits": poi_visits,
        "poi-users": {p: len(u) for p, u in poi_users.items()},
        "geo": geo,
        "unique-users": [
            {"day": (dt.date(1970, 1, 1) + dt.timedelta(days=d)).isoformat(), "users": len(u)}
            for d, u in sorted(users.items())
        ],
        "visits": len(visits),
        "activities": len(acts),
    }
