"""Report-time ranges and the time-series buckets chosen for them (no SQL here)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Final, Literal

from dashboard.schema import MINUTE_MS
from footfall.layout import MS_PER_DAY

__all__ = ["BUCKETS", "BUCKET_MINUTES", "Bucket", "Range", "bucket_for_range", "bucket_points"]

_HOUR_MS: Final = 3_600_000

Bucket = Literal["minute", "hour", "day", "month", "year"]
#: Time-series buckets, finest first; month and year are calendar (UTC) buckets.
BUCKETS: Final[tuple[Bucket, ...]] = ("minute", "hour", "day", "month", "year")
#: Width in minutes of the buckets that have one (month and year do not).
BUCKET_MINUTES: Final[dict[Bucket, int]] = {"minute": 1, "hour": 60, "day": MS_PER_DAY // MINUTE_MS}


@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    """A half-open report-time range ``[start_ms, end_ms)``, already validated."""

    start_ms: int
    end_ms: int

    @property
    def start_minute(self) -> int:
        return self.start_ms // MINUTE_MS

    @property
    def end_minute(self) -> int:
        """Exclusive. Query ranges are minute-aligned (``dashboard.params``), so exact."""
        return -(-self.end_ms // MINUTE_MS)

    @property
    def first_day(self) -> int:
        return self.start_ms // MS_PER_DAY

    @property
    def last_day(self) -> int:
        """Inclusive: the UTC day holding the range's last millisecond."""
        return (self.end_ms - 1) // MS_PER_DAY

    def whole_days(self) -> Range:
        """The range widened to the UTC days it overlaps."""
        return Range(self.first_day * MS_PER_DAY, (self.last_day + 1) * MS_PER_DAY)


def bucket_for_range(r: Range) -> Bucket:
    """Time-series bucket chosen by the range: minute up to 6 h, hour up to 14 days, day up
    to 1,000 days, month up to 1,000 months, else year (any range of report times: at most
    10,000 points)."""
    span = r.end_ms - r.start_ms
    if span <= 6 * _HOUR_MS:
        return "minute"
    if span <= 14 * MS_PER_DAY:
        return "hour"
    if span <= 1000 * MS_PER_DAY:
        return "day"
    if bucket_points(r, "month") <= 1000:
        return "month"
    return "year"


def bucket_points(r: Range, bucket: Bucket) -> int:
    """How many ``bucket``-wide time-series points ``r`` touches."""
    if bucket in BUCKET_MINUTES:
        width = BUCKET_MINUTES[bucket]
        return (r.end_minute - 1) // width - r.start_minute // width + 1
    first = _utc(r.start_ms)
    last = _utc(r.end_ms - 1)
    if bucket == "year":
        return last.year - first.year + 1
    return (last.year - first.year) * 12 + last.month - first.month + 1


def _utc(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
