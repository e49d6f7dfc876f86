"""The original client's generator: 12 visits and 12 activities per simulated day, its distributions."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter

from footfall.generator import (
    ACTIVITY_TYPES,
    DEFAULT_START_DATE,
    day_start_ms,
    original_activities,
    original_visits,
    user_id,
)

HOUR = 3_600_000


def test_days_start_at_2018_01_01_utc() -> None:
    assert dt.date(2018, 1, 1) == DEFAULT_START_DATE
    assert day_start_ms(DEFAULT_START_DATE, 0) == 1514764800000
    assert day_start_ms(DEFAULT_START_DATE, 3) == 1514764800000 + 3 * 86_400_000
    assert day_start_ms(dt.date(2024, 2, 29), 0) == 1709164800000


def test_visits_are_12_two_hours_apart_40_minutes_long() -> None:
    rng = random.Random(1)
    uid = user_id(rng)
    visits = original_visits(rng, uid, day_start_ms(DEFAULT_START_DATE, 0))
    assert len(visits) == 12
    assert [v.enterTime for v in visits] == [1514764800000 + 2 * i * HOUR for i in range(12)]
    assert all(v.exitTime - v.enterTime == 40 * 60_000 for v in visits)
    assert all(v.userId == uid and v.dataVer == 1 for v in visits)


def test_activities_are_12_two_hours_apart_from_one_oclock_30_minutes_long() -> None:
    rng = random.Random(2)
    activities = original_activities(rng, user_id(rng), day_start_ms(DEFAULT_START_DATE, 0))
    assert [a.startTime for a in activities] == [1514764800000 + HOUR + 2 * i * HOUR for i in range(12)]
    assert all(a.endTime - a.startTime == 30 * 60_000 for a in activities)


def test_distributions_match_the_original() -> None:
    rng = random.Random(3)
    uid = user_id(rng)
    visits = [v for d in range(500) for v in original_visits(rng, uid, day_start_ms(DEFAULT_START_DATE, d))]
    activities = [a for d in range(500) for a in original_activities(rng, uid, day_start_ms(DEFAULT_START_DATE, d))]
    algorithms = Counter(v.algorithmType for v in visits)
    assert set(algorithms) == set(range(1, 8))
    assert min(algorithms.values()) > len(visits) / 7 * 0.8  # roughly uniform
    kinds = Counter(a.activityType for a in activities)
    assert set(kinds) == set(ACTIVITY_TYPES)
    assert all(0 <= v.poiId < 2**63 for v in visits)
    assert all(-90 <= v.latitude <= 90 and -180 <= v.longitude <= 180 for v in visits)
    assert min(v.latitude for v in visits) < -80 and max(v.latitude for v in visits) > 80


def test_same_seed_same_data() -> None:
    def day(seed: int) -> list[object]:
        rng = random.Random(seed)
        uid = user_id(rng)
        return [*original_visits(rng, uid, 0), *original_activities(rng, uid, 0)]

    assert day(7) == day(7)
    assert day(7) != day(8)
    assert user_id(random.Random(1)).version == 4
