"""Synthetic reports with structure worth charting (``--profile realistic``).

The world (fixed, the same for every run, so charts of different runs compare):

* 24 real cities with their coordinates, UTC offsets (standard time) and a weight
  (metro population, millions) that decides how many points of interest and users each gets.
* Points of interest (POIs) clustered around each city centre (Gaussian, ~3 km spread for
  a city of weight 10), each with a fixed ``poiId``, fixed coordinates and a category
  (cafe, office, shop, restaurant, park, gym, museum, station). Within a city, popularity
  follows Zipf's law (the r-th most popular POI is chosen with weight 1/r^1.1).

Users (one per simulated client, drawn from the run's seed):

* a home city (by weight) and a home location near its centre;
* a wake-up hour (around 07:00 local, σ 45 min); 70 % have a workplace (an office POI);
* a handful of favourite POIs they go back to (70 % of visits), the rest drawn by Zipf.

A day (in the user's local time): weekdays go cafe → work (about 8 h) → 1-3 evening visits
(restaurant, gym, shop…); weekends have 2-5 leisure visits (park, museum, shop…). Each
visit lasts a category-typical time. Between two visits the user moves: an activity from the
first POI to the next, whose type follows the distance — walking (1) or running (2) when
short, cycling (4) for a few km, in a vehicle (8) or on public transit (16) further — and whose
duration is distance / speed (plus waiting, for transit). So activity ``startTime`` is the
previous visit's ``exitTime`` and ``endTime`` the next visit's ``enterTime``.

``algorithmType`` (which detector produced the visit) is skewed: 1 is most common.

Reproducibility: everything about a user comes from ``random.Random`` seeded with
``(seed, client)`` and everything about one of its days from ``(seed, client, day)``, so a
day can be regenerated alone (``bench verify`` does, to know the report keys).
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
import random
import uuid
from typing import Final, NamedTuple

from footfall.generator import DATA_VERSION, HOUR_MS, MINUTE_MS, day_start_ms, user_id
from footfall.reports import Activity, Visit

__all__ = [
    "ACTIVITY_NAMES",
    "CATEGORIES",
    "CITIES",
    "POI",
    "City",
    "RealisticUser",
    "World",
    "world",
]


class City(NamedTuple):
    """A real city: centre coordinates, UTC offset (hours, standard time), weight (~ metro population, M)."""

    name: str
    latitude: float
    longitude: float
    utc_offset_h: float
    weight: float


CITIES: Final = (
    City("Tokyo", 35.6762, 139.6503, 9, 37.0),
    City("Delhi", 28.6139, 77.2090, 5.5, 32.0),
    City("Shanghai", 31.2304, 121.4737, 8, 28.0),
    City("São Paulo", -23.5505, -46.6333, -3, 22.0),
    City("Mexico City", 19.4326, -99.1332, -6, 22.0),
    City("Cairo", 30.0444, 31.2357, 2, 21.0),
    City("Mumbai", 19.0760, 72.8777, 5.5, 21.0),
    City("New York", 40.7128, -74.0060, -5, 19.0),
    City("Istanbul", 41.0082, 28.9784, 3, 15.5),
    City("Lagos", 6.5244, 3.3792, 1, 15.0),
    City("Buenos Aires", -34.6037, -58.3816, -3, 15.0),
    City("Los Angeles", 34.0522, -118.2437, -8, 12.5),
    City("Moscow", 55.7558, 37.6173, 3, 12.5),
    City("Paris", 48.8566, 2.3522, 1, 11.0),
    City("Jakarta", -6.2088, 106.8456, 7, 11.0),
    City("London", 51.5074, -0.1278, 0, 9.5),
    City("Seoul", 37.5665, 126.9780, 9, 10.0),
    City("Chicago", 41.8781, -87.6298, -6, 8.9),
    City("Nairobi", -1.2921, 36.8219, 3, 5.0),
    City("Berlin", 52.5200, 13.4050, 1, 4.5),
    City("Madrid", 40.4168, -3.7038, 1, 6.7),
    City("Sydney", -33.8688, 151.2093, 10, 5.3),
    City("Toronto", 43.6532, -79.3832, -5, 6.3),
    City("Singapore", 1.3521, 103.8198, 8, 5.9),
)

#: POI categories: (name, share of POIs, typical visit length in minutes (median), spread factor).
CATEGORIES: Final = (
    ("cafe", 0.20, 25),
    ("office", 0.15, 480),
    ("shop", 0.20, 30),
    ("restaurant", 0.15, 70),
    ("park", 0.10, 60),
    ("gym", 0.07, 75),
    ("museum", 0.05, 120),
    ("station", 0.08, 10),
)
_CATEGORY_INDEX: Final = {name: i for i, (name, _, _) in enumerate(CATEGORIES)}

#: activityType codes of the original client, with the meaning this profile gives them.
ACTIVITY_NAMES: Final = {1: "walking", 2: "running", 4: "cycling", 8: "in vehicle", 16: "on transit"}
_SPEED_KMH: Final = {1: 4.8, 2: 10.0, 4: 15.0, 8: 28.0, 16: 22.0}

#: algorithmType 1..7, most visits from detector 1.
_ALGORITHM_WEIGHTS: Final = tuple(itertools.accumulate((40, 22, 14, 10, 7, 4, 3)))

_POIS_PER_WEIGHT: Final = 12  # a city of weight 10 gets 120 POIs
_ZIPF_S: Final = 1.1
_WORLD_SEED: Final = 20180101
_KM_PER_DEG: Final = 111.32


class POI(NamedTuple):
    """A point of interest: fixed id, place and category."""

    poi_id: int
    city: int
    latitude: float
    longitude: float
    category: int


def _distance_km(a_lat: float, a_lon: float, b_lat: float, b_lon: float) -> float:
    """Equirectangular approximation: exact enough within a city."""
    x = (b_lon - a_lon) * math.cos(math.radians((a_lat + b_lat) / 2))
    return math.hypot(x, b_lat - a_lat) * _KM_PER_DEG


class World:
    """The fixed cities and POIs (built once per process; see the module docstring)."""

    def __init__(self, seed: int = _WORLD_SEED) -> None:
        rng = random.Random(seed)
        self.pois: list[POI] = []
        #: per city: its POI indices by popularity rank, and cumulative Zipf weights
        self.city_pois: list[list[int]] = []
        self.city_cum: list[list[float]] = []
        #: per city and category: POI indices (for "a cafe in Paris")
        self.by_category: list[list[list[int]]] = []
        category_cum = list(itertools.accumulate(share for _, share, _ in CATEGORIES))
        for c, city in enumerate(CITIES):
            n = max(20, int(city.weight * _POIS_PER_WEIGHT))
            spread = 0.012 * math.sqrt(city.weight)  # degrees; bigger cities sprawl more
            indices = []
            by_cat: list[list[int]] = [[] for _ in CATEGORIES]
            for _ in range(n):
                lat = min(89.9, max(-89.9, rng.gauss(city.latitude, spread)))
                lon_spread = spread / max(0.2, math.cos(math.radians(city.latitude)))
                lon = (rng.gauss(city.longitude, lon_spread) + 180.0) % 360.0 - 180.0
                category = bisect.bisect_left(category_cum, rng.random() * category_cum[-1])
                poi = POI(rng.getrandbits(63), c, round(lat, 6), round(lon, 6), category)
                indices.append(len(self.pois))
                by_cat[category].append(len(self.pois))
                self.pois.append(poi)
            self.city_pois.append(indices)
            self.city_cum.append(list(itertools.accumulate(1.0 / (r**_ZIPF_S) for r in range(1, n + 1))))
            self.by_category.append(by_cat)
        self.city_cum_weights = list(itertools.accumulate(city.weight for city in CITIES))

    def popular_poi(self, rng: random.Random, city: int) -> int:
        """A POI of ``city`` drawn by Zipf popularity."""
        cum = self.city_cum[city]
        return self.city_pois[city][bisect.bisect_left(cum, rng.random() * cum[-1])]

    def poi_of(self, rng: random.Random, city: int, categories: tuple[str, ...]) -> int:
        """A POI of one of ``categories`` in ``city``, biased to popular ones (lower rank first)."""
        pool = [i for name in categories for i in self.by_category[city][_CATEGORY_INDEX[name]]]
        if not pool:
            return self.popular_poi(rng, city)
        pool.sort()  # POIs were appended in rank order: a lower index is more popular
        weights = list(itertools.accumulate(1.0 / (r**_ZIPF_S) for r in range(1, len(pool) + 1)))
        return pool[bisect.bisect_left(weights, rng.random() * weights[-1])]


_WORLD: World | None = None


def world() -> World:
    """The shared world (built on first use: ~3000 POIs, a few milliseconds)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = World()
    return _WORLD


class RealisticUser:
    """One simulated user; :meth:`day` gives a day of visits and activities.

    ``uid`` replaces the seeded userId (the bench derives one from its run id); the seeded one
    is drawn anyway, so every other draw, and so the data, stays that of ``(seed, client)``.
    """

    def __init__(self, seed: int, client: int, start_date: dt.date, *, uid: uuid.UUID | None = None) -> None:
        w = world()
        rng = random.Random(f"footfall-realistic/{seed}/{client}")
        self._seed_prefix = f"footfall-realistic/{seed}/{client}/"
        self._start_date = start_date
        # The seeded id is drawn even when ``uid`` replaces it, so every later draw stays the same.
        seeded = user_id(rng)
        self.user_id: uuid.UUID = seeded if uid is None else uid
        self.city = bisect.bisect_left(w.city_cum_weights, rng.random() * w.city_cum_weights[-1])
        self.wake_min = min(10 * 60, max(5 * 60, rng.gauss(7 * 60, 45)))
        self.work: int | None = w.poi_of(rng, self.city, ("office",)) if rng.random() < 0.7 else None
        self.favourites = [w.popular_poi(rng, self.city) for _ in range(rng.randint(4, 10))]
        self.activeness = rng.uniform(0.6, 1.4)  # scales the number of leisure visits

    def _pick(self, rng: random.Random, categories: tuple[str, ...]) -> int:
        w = world()
        if rng.random() < 0.7:
            fitting = [p for p in self.favourites if CATEGORIES[w.pois[p].category][0] in categories]
            if fitting:
                return rng.choice(fitting)
        return w.poi_of(rng, self.city, categories)

    def day(self, day: int) -> tuple[list[Visit], list[Activity]]:
        """Day ``day`` (from the start date) in the user's local time; see the module docstring."""
        w = world()
        rng = random.Random(self._seed_prefix + str(day))
        city = CITIES[self.city]
        date = self._start_date + dt.timedelta(days=day)
        local_midnight = day_start_ms(self._start_date, day) - int(city.utc_offset_h * HOUR_MS)
        weekday = date.weekday() < 5
        # 1. The plan: which kinds of place, in order.
        plan: list[tuple[str, ...]] = []
        if weekday and self.work is not None:
            if rng.random() < 0.6:
                plan.append(("cafe", "station"))
            plan.append(("office",))
            evening = round(rng.uniform(0.5, 3.0) * self.activeness)
            plan += [("restaurant", "gym", "shop", "cafe")] * max(1, evening)
        else:
            leisure = max(2, round(rng.uniform(2, 5) * self.activeness))
            plan += [("park", "museum", "shop", "restaurant", "cafe", "gym")] * leisure
        # 2. Walk through the day.
        t = local_midnight + int((self.wake_min + rng.uniform(30, 90)) * MINUTE_MS)
        day_end = local_midnight + 23 * HOUR_MS
        visits: list[Visit] = []
        activities: list[Activity] = []
        prev: POI | None = None
        for kinds in plan:
            index = self.work if kinds == ("office",) and self.work is not None else self._pick(rng, kinds)
            poi = w.pois[index]
            if prev is not None:
                km = _distance_km(prev.latitude, prev.longitude, poi.latitude, poi.longitude)
                activity_type = _mode_for(rng, km)
                minutes = km / _SPEED_KMH[activity_type] * 60 + (rng.uniform(3, 12) if activity_type == 16 else 0)
                start = t
                t += max(3 * MINUTE_MS, int(minutes * MINUTE_MS * rng.uniform(0.85, 1.3)))
                activities.append(
                    Activity(
                        dataVer=DATA_VERSION,
                        userId=self.user_id,
                        activityType=activity_type,
                        startTime=start,
                        endTime=t,
                        startLatitude=prev.latitude,
                        startLongitude=prev.longitude,
                        endLatitude=poi.latitude,
                        endLongitude=poi.longitude,
                    )
                )
            median = CATEGORIES[poi.category][2]
            stay = int(median * math.exp(rng.gauss(0, 0.35)) * MINUTE_MS)
            if t + stay > day_end:
                if len(visits) >= 2:
                    if prev is not None:
                        activities.pop()  # the day ends before this visit: drop the way there too
                    break
                # Every day has at least two visits (and so an activity): cut this one short.
                stay = max(5 * MINUTE_MS, day_end - t)
            algorithm = bisect.bisect_left(_ALGORITHM_WEIGHTS, rng.random() * _ALGORITHM_WEIGHTS[-1]) + 1
            visits.append(
                Visit(
                    dataVer=DATA_VERSION,
                    userId=self.user_id,
                    algorithmType=algorithm,
                    enterTime=t,
                    exitTime=t + stay,
                    poiId=poi.poi_id,
                    latitude=poi.latitude,
                    longitude=poi.longitude,
                )
            )
            t += stay
            prev = poi
        return visits, activities


def _mode_for(rng: random.Random, km: float) -> int:
    """activityType for a trip of ``km``: walking/running when short, cycling, then vehicle/transit."""
    if km < 1.2:
        return 2 if rng.random() < 0.1 else 1
    if km < 4.0:
        return rng.choice((1, 4, 4, 16))
    return 8 if rng.random() < 0.55 else 16
