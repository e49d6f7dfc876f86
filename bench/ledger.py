"""What the gateway acknowledged, recorded compactly so verification scales to millions of reports.

Every client's data is a pure function of (profile, seed, run id, client index, day, type),
and one request carries one (client, type, day). So the ledger keeps, per client and report
type, only the *days* whose request got a 2xx — as a list of half-open ranges ``[[first, end), …]``
(a closed-loop client acknowledges days in order, so that is usually one range) — and, per day
with failed attempts, ``[day, attempts, maybe_written]``: how many attempts failed, and how
many of those the gateway may have written (not the ones it refused before producing, see
:attr:`bench.client.Outcome.maybe_written`). ``verify`` regenerates every report from it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

from footfall.reports import ReportType

__all__ = ["ClientLedger", "DayRanges"]


class DayRanges:
    """A set of days kept as sorted, disjoint, non-adjacent half-open ranges."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: list[list[int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges or []:
            if self._ends and start <= self._ends[-1]:  # not from to_list(): merge day by day
                for day in range(start, end):
                    self.add(day)
            elif end > start:
                self._starts.append(start)
                self._ends.append(end)

    def add(self, day: int) -> bool:
        """Add ``day``; False if it was already present. Amortised O(1) for days added in order."""
        starts, ends = self._starts, self._ends
        if ends and ends[-1] == day:  # the common case: the next day in order
            ends[-1] = day + 1
            return True
        i = bisect.bisect_right(starts, day)
        if i > 0 and day < ends[i - 1]:
            return False
        joins_left = i > 0 and ends[i - 1] == day
        joins_right = i < len(starts) and starts[i] == day + 1
        if joins_left and joins_right:
            ends[i - 1] = ends[i]
            del starts[i], ends[i]
        elif joins_left:
            ends[i - 1] = day + 1
        elif joins_right:
            starts[i] = day
        else:
            starts.insert(i, day)
            ends.insert(i, day + 1)
        return True

    def __contains__(self, day: object) -> bool:
        if not isinstance(day, int):
            return False
        i = bisect.bisect_right(self._starts, day)
        return i > 0 and day < self._ends[i - 1]

    def __iter__(self) -> Iterator[int]:
        for start, end in zip(self._starts, self._ends, strict=True):
            yield from range(start, end)

    def __len__(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def to_list(self) -> list[list[int]]:
        """``[[start, end), …]`` for JSON."""
        return [[s, e] for s, e in zip(self._starts, self._ends, strict=True)]


class ClientLedger:
    """One client's acknowledged and failed days, per report type."""

    __slots__ = ("acked", "client", "failed", "user_id")

    def __init__(self, client: int, user_id: str) -> None:
        self.client = client
        self.user_id = user_id
        self.acked: dict[ReportType, DayRanges] = {t: DayRanges() for t in ReportType}
        #: per type: day -> [failed attempts, of which maybe written]
        self.failed: dict[ReportType, dict[int, list[int]]] = {t: {} for t in ReportType}

    def ack(self, report_type: ReportType, day: int) -> None:
        """The request for (type, day) got a 2xx: each of its reports must land exactly once."""
        self.acked[report_type].add(day)

    def fail(self, report_type: ReportType, day: int, *, maybe_written: bool = True) -> None:
        """An attempt for (type, day) failed; ``maybe_written``: its reports may have landed."""
        counts = self.failed[report_type].setdefault(day, [0, 0])
        counts[0] += 1
        counts[1] += maybe_written

    def maybe_written(self, report_type: ReportType, day: int) -> int:
        """Failed attempts of (type, day) that may have landed: extra copies they can explain."""
        counts = self.failed[report_type].get(day)
        return counts[1] if counts else 0

    def to_json(self) -> dict[str, Any]:
        """The ledger entry of the run file."""
        return {
            "client": self.client,
            "userId": self.user_id,
            "acked": {str(t): self.acked[t].to_list() for t in ReportType},
            "failed": {str(t): [[d, n, w] for d, (n, w) in sorted(self.failed[t].items())] for t in ReportType},
        }

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> ClientLedger:
        """Inverse of :meth:`to_json`."""
        ledger = cls(int(entry["client"]), str(entry["userId"]))
        for t in ReportType:
            ledger.acked[t] = DayRanges(entry["acked"][str(t)])
            ledger.failed[t] = {int(d): [int(n), int(w)] for d, n, w in entry["failed"][str(t)]}
        return ledger
