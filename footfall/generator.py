"""Synthetic reports as the original Go client made them (``--profile original``).

Each simulated client has one userId. Each tick it sends one simulated day:
12 visits two hours apart from 00:00 UTC, each 40 minutes long, and 12 activities
two hours apart from 01:00 UTC, each 30 minutes long. The day advances only after a
successful send. Days start at 2018-01-01 UTC, as in the original, or at a chosen date.

Everything is drawn from a ``random.Random`` the caller owns, so a seed reproduces the data.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Final

from footfall.layout import MS_PER_DAY
from footfall.reports import Activity, Visit

__all__ = [
    "ACTIVITY_TYPES",
    "ALGORITHM_TYPES",
    "DEFAULT_START_DATE",
    "REPORTS_PER_DAY",
    "day_start_ms",
    "original_activities",
    "original_visits",
    "user_id",
]

HOUR_MS: Final = 3_600_000
MINUTE_MS: Final = 60_000
REPORTS_PER_DAY: Final = 12
ALGORITHM_TYPES: Final = tuple(range(1, 8))
ACTIVITY_TYPES: Final = (1, 2, 4, 8, 16)
VISIT_LENGTH_MS: Final = 40 * MINUTE_MS
ACTIVITY_LENGTH_MS: Final = 30 * MINUTE_MS
DEFAULT_START_DATE: Final = dt.date(2018, 1, 1)
DATA_VERSION: Final = 1


def day_start_ms(start_date: dt.date, day: int) -> int:
    """Epoch ms of 00:00 UTC on ``start_date + day`` days."""
    start = dt.datetime(start_date.year, start_date.month, start_date.day, tzinfo=dt.UTC)
    return int(start.timestamp()) * 1000 + day * MS_PER_DAY


def user_id(rng: random.Random) -> uuid.UUID:
    """A random version-4 UUID drawn from ``rng`` (reproducible, unlike ``uuid.uuid4``)."""
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def original_visits(rng: random.Random, uid: uuid.UUID, day_ms: int) -> list[Visit]:
    """One day of visits: 12, at 00:00, 02:00, … 22:00, each 40 minutes long."""
    out = []
    for i in range(REPORTS_PER_DAY):
        enter = day_ms + 2 * i * HOUR_MS
        out.append(
            Visit(
                dataVer=DATA_VERSION,
                userId=uid,
                algorithmType=rng.choice(ALGORITHM_TYPES),
                enterTime=enter,
                exitTime=enter + VISIT_LENGTH_MS,
                poiId=rng.getrandbits(63),
                latitude=rng.uniform(-90.0, 90.0),
                longitude=rng.uniform(-180.0, 180.0),
            )
        )
    return out


def original_activities(rng: random.Random, uid: uuid.UUID, day_ms: int) -> list[Activity]:
    """One day of activities: 12, at 01:00, 03:00, … 23:00, each 30 minutes long."""
    out = []
    for i in range(REPORTS_PER_DAY):
        start = day_ms + HOUR_MS + 2 * i * HOUR_MS
        out.append(
            Activity(
                dataVer=DATA_VERSION,
                userId=uid,
                activityType=rng.choice(ACTIVITY_TYPES),
                startTime=start,
                endTime=start + ACTIVITY_LENGTH_MS,
                startLatitude=rng.uniform(-90.0, 90.0),
                startLongitude=rng.uniform(-180.0, 180.0),
                endLatitude=rng.uniform(-90.0, 90.0),
                endLongitude=rng.uniform(-180.0, 180.0),
            )
        )
    return out
