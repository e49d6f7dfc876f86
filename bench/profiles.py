"""Data profiles: what each simulated client sends, as a pure function of (seed, client, day, type).

* ``original`` — the Go client's distributions exactly (:mod:`footfall.generator`): 12 visits
  2 h apart from 00:00 UTC, 40 min long, ``algorithmType`` 1..7, uniform coordinates and poiId;
  12 activities 2 h apart from 01:00 UTC, 30 min long, ``activityType`` in {1, 2, 4, 8, 16}.
* ``realistic`` — :mod:`footfall.realistic`: points of interest around real cities, Zipf
  popularity, users with home cities and daily rhythms.

Reproducibility: each client owns a ``random.Random`` seeded from ``(seed, client)``; its draws
are consumed in the fixed order (day 0 visits, day 0 activities, day 1 visits, …) whatever
the mode, and a retried request resends the same bytes. ``verify`` needs only the report
*keys*, which :meth:`Profile.report_times` regenerates cheaply.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
import zlib
from collections.abc import Sequence
from typing import Final, Protocol

import msgspec

from footfall import generator
from footfall.reports import Activity, ReportType, Visit

__all__ = ["PROFILES", "ClientData", "OriginalProfile", "Profile", "encode_body", "make_profile"]

_ENCODER: Final = msgspec.json.Encoder()


def encode_body(reports: Sequence[Visit] | Sequence[Activity], *, gzip: bool) -> bytes:
    """A request body: the JSON array, gzip'd at level 1 (cheap; the gateway pays for decompression)."""
    raw = _ENCODER.encode(reports)
    return zlib.compress(raw, 1, wbits=31) if gzip else raw


def client_rng(seed: int, client: int) -> random.Random:
    """The random stream of one client (independent of how clients are spread over processes)."""
    return random.Random(f"footfall-bench/{seed}/{client}")


class ClientData(Protocol):
    """One simulated client: a userId and its reports per (type, day)."""

    user_id: uuid.UUID

    def reports(self, report_type: ReportType, day: int) -> list[Visit] | list[Activity]:
        """The reports of ``day``; call in order (day 0 visit, day 0 activity, day 1 visit, …)."""
        ...


class Profile(Protocol):
    """A data profile; see the module docstring."""

    name: str

    def client(self, index: int) -> ClientData:
        """Client ``index``'s data (its userId is drawn here)."""
        ...

    def report_times(self, index: int, report_type: ReportType, day: int) -> Sequence[int]:
        """The enter/start times (ms) of client ``index``'s reports of ``day``: their identity."""
        ...


class _OriginalClient:
    __slots__ = ("_rng", "_start_date", "user_id")

    def __init__(self, rng: random.Random, start_date: dt.date) -> None:
        self._rng = rng
        self._start_date = start_date
        self.user_id = generator.user_id(rng)

    def reports(self, report_type: ReportType, day: int) -> list[Visit] | list[Activity]:
        day_ms = generator.day_start_ms(self._start_date, day)
        if report_type is ReportType.VISIT:
            return generator.original_visits(self._rng, self.user_id, day_ms)
        return generator.original_activities(self._rng, self.user_id, day_ms)


class OriginalProfile:
    """The original Go client's data (see the module docstring)."""

    name = "original"

    def __init__(self, seed: int, start_date: dt.date = generator.DEFAULT_START_DATE) -> None:
        self.seed = seed
        self.start_date = start_date

    def client(self, index: int) -> _OriginalClient:  # noqa: D102
        return _OriginalClient(client_rng(self.seed, index), self.start_date)

    def report_times(self, index: int, report_type: ReportType, day: int) -> Sequence[int]:  # noqa: D102
        base = generator.day_start_ms(self.start_date, day)
        if report_type is ReportType.ACTIVITY:
            base += generator.HOUR_MS
        step = 2 * generator.HOUR_MS
        return range(base, base + generator.REPORTS_PER_DAY * step, step)


def make_profile(name: str, seed: int, start_date: dt.date) -> Profile:
    """The profile called ``name``.

    Raises:
        ConfigError: unknown profile name.
    """
    from footfall.errors import ConfigError

    try:
        factory = PROFILES[name]
    except KeyError:
        raise ConfigError(f"--profile: unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
    return factory(seed, start_date)


PROFILES: Final[dict[str, type[OriginalProfile]]] = {"original": OriginalProfile}
