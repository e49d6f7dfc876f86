"""Query-string parsing for the JSON API: strict, with messages that say what to send.

Every parameter is parsed into a typed value here, before any SQL runs; the store binds
those values as parameters, so no request text ever becomes SQL.

Ranges are half-open ``[from, to)`` in report time and must fall on whole minutes (the
rollups' grain): an unaligned bound is refused rather than silently widened, so every
answer counts exactly the range it echoes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Final, Literal, cast

from dashboard.errors import QueryError
from dashboard.ranges import BUCKETS, Bucket, Range, bucket_for_range, bucket_points
from dashboard.schema import GEO_CELLS, MINUTE_MS, ReportKind
from footfall.reports import MAX_EPOCH_MS

__all__ = ["MAX_POINTS", "QueryParams", "parse_params"]

#: Most time-series points one request may ask for (an explicit small bucket over a long range).
MAX_POINTS: Final = 20_000
#: Parameters every endpoint takes; ``type`` and the rest only where they apply.
_COMMON: Final = frozenset({"from", "to", "counting"})
_TYPES: Final = {"all": ("visit", "activity"), "visit": ("visit",), "activity": ("activity",)}
#: ``to`` may be one past the last representable report time (the range is half-open).
_MAX_TO: Final = MAX_EPOCH_MS + 1
# ASCII digits only: str.isdigit() also accepts "²" (int() then fails) and other scripts' digits.
_INTEGER: Final = re.compile(r"-?[0-9]{1,19}")


@dataclasses.dataclass(frozen=True, slots=True)
class QueryParams:
    """A validated query. ``range`` is ``None`` when neither bound was given (all data)."""

    start_ms: int | None
    end_ms: int | None
    kinds: tuple[ReportKind, ...]
    type_name: str
    dedupe: bool = False
    bucket: Bucket | Literal["auto"] = "auto"
    by: Literal["visits", "users"] = "visits"
    limit: int = 10
    cell: int = 2

    def resolve(self, extent: Range | None) -> Range | None:
        """The range to query: the given bounds, missing ones taken from the data's extent."""
        if self.start_ms is not None and self.end_ms is not None:
            return Range(self.start_ms, self.end_ms)
        if extent is None:
            return None
        start = self.start_ms if self.start_ms is not None else extent.start_ms
        end = self.end_ms if self.end_ms is not None else extent.end_ms
        if end <= start:
            return None
        return Range(start, end)

    def bucket_for(self, r: Range) -> Bucket:
        """The time-series bucket: the one asked for, or chosen by the range's length."""
        if self.bucket == "auto":
            return bucket_for_range(r)  # always within MAX_POINTS (at most 10,000 years)
        points = bucket_points(r, self.bucket)
        if points > MAX_POINTS:
            raise QueryError(
                f"bucket={self.bucket} over this range gives {points} points (at most {MAX_POINTS}): "
                "use a larger bucket, bucket=auto, or a shorter range"
            )
        return self.bucket


def _one(args: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = args.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise QueryError(f"{name}: given {len(values)} times, expected once")
    return values[0]


def _time(args: Mapping[str, Sequence[str]], name: str) -> int | None:
    raw = _one(args, name)
    if raw is None or raw == "":
        return None
    value: int
    if _INTEGER.fullmatch(raw):
        value = int(raw)
    else:
        try:
            parsed = dt.datetime.fromisoformat(raw)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            value = int(parsed.timestamp() * 1000)
        except (ValueError, OverflowError):
            raise QueryError(
                f"{name}: expected epoch milliseconds or an ISO-8601 time like 2018-01-01T00:00:00Z, got {raw[:40]!r}"
            ) from None
    if not 0 <= value <= _MAX_TO:
        raise QueryError(f"{name}: {value} is outside 0..{_MAX_TO} (epoch milliseconds)")
    if value % MINUTE_MS and value != _MAX_TO:
        floor = value - value % MINUTE_MS
        raise QueryError(
            f"{name}: {raw[:40]} is not on a whole minute (the dashboard counts per minute): "
            f"use a multiple of {MINUTE_MS} ms, e.g. {floor} or {floor + MINUTE_MS}"
        )
    return value


def _choice(args: Mapping[str, Sequence[str]], name: str, choices: Sequence[str], default: str) -> str:
    raw = _one(args, name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise QueryError(f"{name}: expected one of {', '.join(choices)}, got {raw[:40]!r}")
    return raw


def _int(args: Mapping[str, Sequence[str]], name: str, lo: int, hi: int, default: int) -> int:
    raw = _one(args, name)
    if raw is None or raw == "":
        return default
    if not _INTEGER.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise QueryError(f"{name}: expected an integer from {lo} to {hi}, got {raw[:40]!r}")
    return int(raw)


def parse_params(args: Mapping[str, Sequence[str]], extra: Sequence[str] = ()) -> QueryParams:
    """Validate a query string (``name -> values``) for an endpoint taking ``extra`` parameters.

    Raises:
        QueryError: an unknown, repeated or invalid parameter (``type`` where it does not
            apply is unknown); a bound not on a whole minute; ``from >= to``.
    """
    allowed = _COMMON | set(extra)
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise QueryError(f"unknown parameter {unknown[0][:40]!r}: expected {', '.join(sorted(allowed))}")
    start = _time(args, "from")
    end = _time(args, "to")
    if start is not None and end is not None and start >= end:
        raise QueryError(f"from ({start}) must be earlier than to ({end})")
    type_name = _choice(args, "type", tuple(_TYPES), "all") if "type" in extra else "all"
    dedupe = _choice(args, "counting", ("lines", "distinct"), "lines") == "distinct"
    bucket = _choice(args, "bucket", ("auto", *BUCKETS), "auto") if "bucket" in extra else "auto"
    by = _choice(args, "by", ("visits", "users"), "visits") if "by" in extra else "visits"
    limit = _int(args, "limit", 1, 100, 10) if "limit" in extra else 10
    cell = 2
    if "cell" in extra:
        cell = int(_choice(args, "cell", tuple(map(str, GEO_CELLS)), "2"))
    return QueryParams(
        start_ms=start,
        end_ms=end,
        kinds=cast(tuple[ReportKind, ...], _TYPES[type_name]),
        type_name=type_name,
        dedupe=dedupe,
        bucket=cast(Bucket | Literal["auto"], bucket),
        by=cast(Literal["visits", "users"], by),
        limit=limit,
        cell=cell,
    )
