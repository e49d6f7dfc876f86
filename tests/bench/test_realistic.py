"""The realistic profile: fixed clustered POIs, Zipf popularity, daily rhythms, plausible activities."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import Counter
from pathlib import Path

from bench.profiles import RealisticProfile
from bench.verify import verify
from footfall.realistic import ACTIVITY_NAMES, CITIES, RealisticUser, world
from footfall.reports import Activity, ReportType, Visit
from tests.bench.conftest import run_bench
from tests.bench.fake_gateway import FakeGateway

START = dt.date(2018, 1, 1)  # a Monday


def sample(users: int = 60, days: int = 7) -> list[tuple[RealisticUser, int, list[Visit], list[Activity]]]:
    out = []
    for c in range(users):
        user = RealisticUser(4, c, START)
        for d in range(days):
            visits, activities = user.day(d)
            out.append((user, d, visits, activities))
    return out


def test_pois_are_fixed_and_clustered_around_cities() -> None:
    where: dict[int, tuple[float, float]] = {}
    for _, _, visits, _ in sample():
        for v in visits:
            assert where.setdefault(v.poiId, (v.latitude, v.longitude)) == (v.latitude, v.longitude)
    for lat, lon in where.values():
        nearest = min(math.hypot(lat - c.latitude, lon - c.longitude) for c in CITIES)
        assert nearest < 1.0, (lat, lon)  # within ~100 km of a real city centre
    assert len(world().pois) > 1000


def test_popularity_is_skewed() -> None:
    counts = Counter(v.poiId for _, _, visits, _ in sample(users=120) for v in visits)
    ranked = sorted(counts.values(), reverse=True)
    # Zipf-like: the most visited POI far above the median one.
    assert ranked[0] >= 8 * ranked[len(ranked) // 2], ranked[:5]


def test_days_are_ordered_and_plausible() -> None:
    for user, day, visits, activities in sample():
        assert len(visits) >= 2 and len(activities) == len(visits) - 1
        assert all(v.userId == user.user_id for v in visits)
        for a, (before, after) in zip(activities, itertools.pairwise(visits), strict=True):
            assert a.startTime == before.exitTime and a.endTime == after.enterTime
            assert (a.startLatitude, a.startLongitude) == (before.latitude, before.longitude)
            assert (a.endLatitude, a.endLongitude) == (after.latitude, after.longitude)
            assert a.activityType in ACTIVITY_NAMES
            assert 3 * 60_000 <= a.endTime - a.startTime <= 6 * 3_600_000
        for v in visits:
            assert 1 <= v.algorithmType <= 7
            assert 0 < v.exitTime - v.enterTime <= 16 * 3_600_000
        # Local times: the first visit is in the morning of the user's city.
        offset = CITIES[user.city].utc_offset_h
        local = dt.datetime.fromtimestamp(visits[0].enterTime / 1000, dt.UTC) + dt.timedelta(hours=offset)
        assert local.date() == START + dt.timedelta(days=day)
        assert 5 <= local.hour <= 12


def test_workdays_differ_from_weekends() -> None:
    weekday_long, weekend_long = 0, 0
    for _, day, visits, _ in sample(users=80):
        long_stays = sum(1 for v in visits if v.exitTime - v.enterTime > 5 * 3_600_000)
        if (START + dt.timedelta(days=day)).weekday() < 5:
            weekday_long += long_stays
        else:
            weekend_long += long_stays
    assert weekday_long > 5 * max(1, weekend_long)  # office days on weekdays


def test_short_trips_walk_long_trips_ride() -> None:
    short, long_ = Counter[int](), Counter[int]()
    for _, _, _, activities in sample(users=100):
        for a in activities:
            x = (a.endLongitude - a.startLongitude) * math.cos(math.radians(a.startLatitude))
            km = math.hypot(a.endLatitude - a.startLatitude, x) * 111.32
            (short if km < 1 else long_ if km > 5 else Counter())[a.activityType] += 1
    assert short and set(short) <= {1, 2}
    assert long_ and set(long_) <= {8, 16}


def test_reproducible_and_keys_regenerate() -> None:
    a, b = RealisticProfile(seed=3, start_date=START), RealisticProfile(seed=3, start_date=START)
    assert a.client(5).reports(ReportType.VISIT, 2) == b.client(5).reports(ReportType.VISIT, 2)
    assert a.client(5).user_id != RealisticProfile(seed=4, start_date=START).client(5).user_id
    for report_type in ReportType:
        reports = a.client(7).reports(report_type, 3)
        assert list(b.report_times(7, report_type, 3)) == [r.time_ms for r in reports]


async def test_realistic_run_verifies(tmp_path: Path) -> None:
    run_file = tmp_path / "run.json"
    with FakeGateway(record_directory=tmp_path / "records") as gw:
        result, content = await run_bench(gw.url, run_file, concurrent_clients=3, requests=30, profile="realistic")
    assert content["profile"] == "realistic" and result.totals.ok == 30
    outcome = verify(run_file, tmp_path / "records")
    assert outcome.ok and outcome.acknowledged == result.totals.reports_acked > 0, outcome.line()
