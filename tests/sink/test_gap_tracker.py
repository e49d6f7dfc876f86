"""GapTracker on its own: offsets in, (records to land, refetch) out. No Kafka, no files."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from sink.consumer import TopicPartition
from sink.gaps import GapTracker, Refetch
from sink.instruments import SinkMetrics

TP = TopicPartition("visit", 0)


class _Rec(NamedTuple):
    offset: int


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _recs(*offsets: int) -> list[_Rec]:
    return [_Rec(o) for o in offsets]


@pytest.fixture
def tracker() -> GapTracker:
    return GapTracker(10.0, SinkMetrics(), clock=_Clock())


def _counts(t: GapTracker) -> tuple[float, float]:
    """(gaps accepted, gaps healed on refetch)."""
    return t.metrics.offset_gaps.labels("visit").value, t.metrics.offset_gap_refetches.labels("visit").value


def test_contiguous_batch_passes_whole(tracker: GapTracker) -> None:
    records = _recs(5, 6, 7)
    assert tracker.contiguous(TP, 4, records) == (records, None)
    assert tracker.pending(TP) is None and _counts(tracker) == (0, 0)


def test_leading_gap_lands_nothing_and_refetches_from_the_first_missing_offset(tracker: GapTracker) -> None:
    landed, refetch = tracker.contiguous(TP, 4, _recs(8, 9))
    assert landed == [] and refetch == Refetch(5, 0.05)
    gap = tracker.pending(TP)
    assert gap is not None and (gap.missing, gap.found, gap.attempts) == (5, 8, 1)


def test_inner_gap_lands_the_records_before_it(tracker: GapTracker) -> None:
    landed, refetch = tracker.contiguous(TP, -1, _recs(0, 1, 2, 6, 7))
    assert landed == _recs(0, 1, 2) and refetch == Refetch(3, 0.05)


def test_refetch_pause_doubles_up_to_half_a_second(tracker: GapTracker) -> None:
    delays = [tracker.contiguous(TP, 4, _recs(9))[1] for _ in range(6)]
    assert [r.delay for r in delays if r is not None] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert {r.offset for r in delays if r is not None} == {5}


def test_gap_heals_when_a_refetch_brings_the_missing_offsets(tracker: GapTracker) -> None:
    tracker.contiguous(TP, 4, _recs(8, 9))
    records = _recs(5, 6, 7, 8, 9)
    assert tracker.contiguous(TP, 4, records) == (records, None)
    assert tracker.pending(TP) is None and _counts(tracker) == (0, 1)


def test_gap_is_accepted_once_it_outlives_the_timeout(tracker: GapTracker) -> None:
    clock = tracker.clock
    assert isinstance(clock, _Clock)
    assert tracker.contiguous(TP, 4, _recs(8, 9))[1] is not None
    clock.now += 9.9
    assert tracker.contiguous(TP, 4, _recs(8, 9))[1] is not None  # still within 10 s
    clock.now += 0.1
    records = _recs(8, 9)
    assert tracker.contiguous(TP, 4, records) == (records, None)  # 5..7 skipped
    assert tracker.pending(TP) is None and _counts(tracker) == (1, 0)


def test_a_later_gap_starts_its_own_timeout(tracker: GapTracker) -> None:
    clock = tracker.clock
    assert isinstance(clock, _Clock)
    tracker.contiguous(TP, 4, _recs(8))  # 5..7 missing
    clock.now += 9.0
    # 5..7 arrived, but 11 is missing now: the first gap healed, the second is new.
    landed, refetch = tracker.contiguous(TP, 4, _recs(5, 6, 7, 8, 9, 10, 12))
    assert landed == _recs(5, 6, 7, 8, 9, 10) and refetch == Refetch(11, 0.05)
    gap = tracker.pending(TP)
    assert gap is not None and gap.missing == 11 and gap.first == clock.now
    assert _counts(tracker) == (0, 1)


def test_zero_timeout_accepts_every_gap_at_once() -> None:
    t = GapTracker(0.0, SinkMetrics(), clock=_Clock())
    records = _recs(3, 5, 9)
    assert t.contiguous(TP, 1, records) == (records, None)
    assert _counts(t) == (3, 0)  # 2, 4 and 6..8


def test_forget_drops_the_gap_so_it_is_looked_at_afresh(tracker: GapTracker) -> None:
    tracker.contiguous(TP, 4, _recs(8))
    tracker.contiguous(TP, 4, _recs(8))
    tracker.forget(TP)
    assert tracker.pending(TP) is None
    assert tracker.contiguous(TP, 4, _recs(8))[1] == Refetch(5, 0.05)  # attempts start again


def test_partitions_are_tracked_apart(tracker: GapTracker) -> None:
    other = TopicPartition("visit", 1)
    tracker.contiguous(TP, 4, _recs(8))
    records = _recs(0, 1)
    assert tracker.contiguous(other, -1, records) == (records, None)
    assert tracker.pending(TP) is not None and tracker.pending(other) is None
