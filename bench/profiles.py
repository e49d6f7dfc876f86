"""Data profiles: what each simulated client sends, as a pure function of (seed, client, day, type).

* ``original`` — the Go client's distributions exactly (:mod:`footfall.generator`): 12 visits
  2 h apart from 00:00 UTC, 40 min long, ``algorithmType`` 1..7, uniform coordinates and poiId;
  12 activities 2 h apart from 01:00 UTC, 30 min long, ``activityType`` in {1, 2, 4, 8, 16}.
* ``realistic`` — :mod:`footfall.realistic`: points of interest around real cities, Zipf
  popularity, users with home cities and daily rhythms.

Reproducibility: each client owns a ``random.Random`` seeded from ``(seed, client)``; its draws
are consumed in the fixed order (day 0 visits, day 0 activities, day 1 visits, …) whatever
the mode, and a retried request resends the same bytes. A bench run also has a *run id*
(:mod:`bench.identity`): the userIds derive from it, everything else from the seed, so two
runs with one seed send the same distributions under different userIds. ``verify``
regenerates every report's exact bytes (:meth:`ClientData.lines`) from (seed, run id).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
import zlib
from collections.abc import Sequence
from typing import Final, Protocol

import msgspec

from bench.identity import run_user_id
from footfall import generator
from footfall.layout import MS_PER_DAY
from footfall.realistic import RealisticUser
from footfall.reports import Activity, ReportType, Visit

__all__ = [
    "PROFILES",
    "ClientData",
    "OriginalProfile",
    "Profile",
    "RealisticProfile",
    "compress_body",
    "encode_body",
    "make_profile",
]

_ENCODER: Final = msgspec.json.Encoder()

# gzip was half of a request's CPU in the bench. ISA-L's deflate (``isal``) at its level 0
# (real LZ77 + Huffman, ~2.3x smaller than the JSON) takes ~3 µs for a 12-report day where
# zlib's level 1 takes ~20 µs (~3.5x smaller). zlib level 1 is the fallback without isal.
# Both write standard gzip.
try:
    from isal.isal_zlib import compress as _isal_compress

    def _compress(data: bytes) -> bytes:
        return _isal_compress(data, 0, wbits=31)

except ImportError:  # pragma: no cover - isal is a dependency

    def _compress(data: bytes) -> bytes:
        return zlib.compress(data, 1, wbits=31)


def encode_body(reports: Sequence[Visit] | Sequence[Activity], *, gzip: bool) -> bytes:
    """A request body: the JSON array, gzip'd (fastest level) when ``gzip``."""
    raw = _ENCODER.encode(reports)
    return _compress(raw) if gzip else raw


def compress_body(raw: bytes, *, gzip: bool) -> bytes:
    """``raw`` (a JSON array) as a request body: gzip'd (fastest level) when ``gzip``."""
    return _compress(raw) if gzip else raw


def client_rng(seed: int, client: int) -> random.Random:
    """The random stream of one client (independent of how clients are spread over processes)."""
    return random.Random(f"footfall-bench/{seed}/{client}")


class ClientData(Protocol):
    """One simulated client: a userId and its reports per (type, day)."""

    user_id: uuid.UUID

    def reports(self, report_type: ReportType, day: int) -> list[Visit] | list[Activity]:
        """The reports of ``day``; call in order (day 0 visit, day 0 activity, day 1 visit, …)."""
        ...

    def encoded(self, report_type: ReportType, day: int) -> tuple[bytes, int]:
        """Like :meth:`reports` (same draws, same order), as the JSON array and its length."""
        ...

    def lines(self, report_type: ReportType, day: int) -> bytes:
        """Like :meth:`encoded` (same draws, same order), as the lines the gateway lands: each
        report encoded compactly on a line of its own."""
        ...


class Profile(Protocol):
    """A data profile; see the module docstring."""

    name: str

    def client(self, index: int) -> ClientData:
        """Client ``index``'s data (its userId is drawn or derived here)."""
        ...

    def report_times(self, index: int, report_type: ReportType, day: int) -> Sequence[int]:
        """The enter/start times (ms) of client ``index``'s reports of ``day`` (``verify`` uses whole lines)."""
        ...


class _WireVisit(msgspec.Struct, gc=False):
    """Same fields, same order as :class:`footfall.reports.Visit`, without its validation hook."""

    dataVer: int
    userId: uuid.UUID
    algorithmType: int
    enterTime: int
    exitTime: int
    poiId: int
    latitude: float
    longitude: float


class _WireActivity(msgspec.Struct, gc=False):
    """Same fields, same order as :class:`footfall.reports.Activity`, without its validation hook."""

    dataVer: int
    userId: uuid.UUID
    activityType: int
    startTime: int
    endTime: int
    startLatitude: float
    startLongitude: float
    endLatitude: float
    endLongitude: float


def _user_id(rng: random.Random, run_id: int | None, index: int) -> uuid.UUID:
    """The seeded userId, or the run's: the seeded one is drawn either way (later draws stay put)."""
    seeded = generator.user_id(rng)
    return seeded if run_id is None else run_user_id(run_id, index)


class _OriginalClient:
    __slots__ = ("_rng", "_start_date", "_start_ms", "user_id")

    def __init__(self, rng: random.Random, start_date: dt.date, uid: uuid.UUID) -> None:
        self._rng = rng
        self._start_date = start_date
        self._start_ms = generator.day_start_ms(start_date, 0)
        self.user_id = uid

    def reports(self, report_type: ReportType, day: int) -> list[Visit] | list[Activity]:
        day_ms = generator.day_start_ms(self._start_date, day)
        if report_type is ReportType.VISIT:
            return generator.original_visits(self._rng, self.user_id, day_ms)
        return generator.original_activities(self._rng, self.user_id, day_ms)

    def encoded(self, report_type: ReportType, day: int) -> tuple[bytes, int]:
        reports = self._structs(report_type, day)
        return _ENCODER.encode(reports), len(reports)

    def lines(self, report_type: ReportType, day: int) -> bytes:
        return _ENCODER.encode_lines(self._structs(report_type, day))

    def _structs(self, report_type: ReportType, day: int) -> list[_WireVisit] | list[_WireActivity]:
        """The bench's hot path: :mod:`footfall.generator`'s draws, made ~40 % cheaper.

        Same random calls in the same order as ``original_visits``/``original_activities``
        (``choice(seq)`` is ``seq[_randbelow(len(seq))]``, ``uniform(a, b)`` is
        ``a + (b - a) * random()``), into Structs without ``__post_init__``: the bytes are
        identical (``tests/bench/test_profiles.py`` checks it), the CPU is not.
        """
        rng, uid = self._rng, self.user_id
        below, rnd = rng._randbelow, rng.random  # type: ignore[attr-defined]
        day_ms = self._start_ms + day * MS_PER_DAY
        step = 2 * generator.HOUR_MS
        n = generator.REPORTS_PER_DAY
        if report_type is ReportType.VISIT:
            bits, length = rng.getrandbits, generator.VISIT_LENGTH_MS
            algorithms = generator.ALGORITHM_TYPES
            visits = [
                _WireVisit(
                    generator.DATA_VERSION, uid, algorithms[below(7)], t, t + length, bits(63),
                    -90.0 + 180.0 * rnd(), -180.0 + 360.0 * rnd(),
                )
                for t in range(day_ms, day_ms + n * step, step)
            ]  # fmt: skip
            return visits
        length, kinds = generator.ACTIVITY_LENGTH_MS, generator.ACTIVITY_TYPES
        first = day_ms + generator.HOUR_MS
        activities = [
            _WireActivity(
                generator.DATA_VERSION, uid, kinds[below(5)], t, t + length,
                -90.0 + 180.0 * rnd(), -180.0 + 360.0 * rnd(), -90.0 + 180.0 * rnd(), -180.0 + 360.0 * rnd(),
            )
            for t in range(first, first + n * step, step)
        ]  # fmt: skip
        return activities


class _Seeded:
    """What every profile is made of: the seed, the first simulated day, and the run id the
    userIds derive from (:func:`bench.identity.run_user_id`; ``None`` keeps the seeded userIds of
    :func:`footfall.generator.user_id`)."""

    def __init__(
        self, seed: int, start_date: dt.date = generator.DEFAULT_START_DATE, run_id: int | None = None
    ) -> None:
        self.seed = seed
        self.start_date = start_date
        self.run_id = run_id


class OriginalProfile(_Seeded):
    """The original Go client's data (see the module docstring)."""

    name = "original"

    def client(self, index: int) -> _OriginalClient:
        rng = client_rng(self.seed, index)
        return _OriginalClient(rng, self.start_date, _user_id(rng, self.run_id, index))

    def report_times(self, index: int, report_type: ReportType, day: int) -> Sequence[int]:
        base = generator.day_start_ms(self.start_date, day)
        if report_type is ReportType.ACTIVITY:
            base += generator.HOUR_MS
        step = 2 * generator.HOUR_MS
        return range(base, base + generator.REPORTS_PER_DAY * step, step)


def make_profile(name: str, seed: int, start_date: dt.date, run_id: int | None = None) -> Profile:
    """The profile called ``name`` (userIds derived from ``run_id`` when given).

    Raises:
        ConfigError: unknown profile name.
    """
    from footfall.errors import ConfigError

    try:
        factory = PROFILES[name]
    except KeyError:
        raise ConfigError(f"--profile: unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
    return factory(seed, start_date, run_id)


class _RealisticClient:
    __slots__ = ("_cached", "_user", "user_id")

    def __init__(self, user: RealisticUser) -> None:
        self._user = user
        self.user_id = user.user_id
        self._cached: tuple[int, tuple[list[Visit], list[Activity]]] | None = None

    def day(self, day: int) -> tuple[list[Visit], list[Activity]]:
        # Visits and activities of a day come from one plan: generate it once for both.
        if self._cached is None or self._cached[0] != day:
            self._cached = (day, self._user.day(day))
        return self._cached[1]

    def reports(self, report_type: ReportType, day: int) -> list[Visit] | list[Activity]:
        visits, activities = self.day(day)
        return visits if report_type is ReportType.VISIT else activities

    def encoded(self, report_type: ReportType, day: int) -> tuple[bytes, int]:
        reports = self.reports(report_type, day)
        return _ENCODER.encode(reports), len(reports)

    def lines(self, report_type: ReportType, day: int) -> bytes:
        return _ENCODER.encode_lines(self.reports(report_type, day))


class RealisticProfile(_Seeded):
    """Cities, Zipf-popular POIs, users with daily rhythms (:mod:`footfall.realistic`)."""

    name = "realistic"

    def __init__(
        self, seed: int, start_date: dt.date = generator.DEFAULT_START_DATE, run_id: int | None = None
    ) -> None:
        super().__init__(seed, start_date, run_id)
        self._clients: dict[int, _RealisticClient] = {}

    def client(self, index: int) -> _RealisticClient:
        client = self._clients.get(index)
        if client is None:
            uid = None if self.run_id is None else run_user_id(self.run_id, index)
            user = RealisticUser(self.seed, index, self.start_date, uid=uid)
            client = self._clients[index] = _RealisticClient(user)
        return client

    def report_times(self, index: int, report_type: ReportType, day: int) -> Sequence[int]:
        return [r.time_ms for r in self.client(index).reports(report_type, day)]


PROFILES: Final[dict[str, type[OriginalProfile] | type[RealisticProfile]]] = {
    "original": OriginalProfile,
    "realistic": RealisticProfile,
}
