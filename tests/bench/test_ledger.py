"""The compact ledger: day ranges and their JSON round trip."""

from __future__ import annotations

import itertools
import random

from bench.ledger import ClientLedger, DayRanges
from footfall.reports import ReportType


def test_days_in_order_make_one_range() -> None:
    days = DayRanges()
    for d in range(1000):
        assert days.add(d)
    assert days.to_list() == [[0, 1000]]
    assert len(days) == 1000
    assert not days.add(5)


def test_out_of_order_days_merge() -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    wanted = set(rng.sample(range(300), 200))
    days = DayRanges()
    order = list(wanted)
    rng.shuffle(order)
    for d in order:
        days.add(d)
    assert set(days) == wanted
    assert all(d in days for d in wanted)
    assert not any(d in days for d in set(range(300)) - wanted)
    ranges = days.to_list()
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))  # disjoint, not adjacent
    assert DayRanges(ranges).to_list() == ranges


def test_ledger_round_trip() -> None:
    ledger = ClientLedger(3, "8f0e0000-0000-4000-8000-000000000000")
    for d in (0, 1, 2, 4):
        ledger.ack(ReportType.VISIT, d)
    ledger.fail(ReportType.VISIT, 3)
    ledger.fail(ReportType.VISIT, 3)
    ledger.fail(ReportType.VISIT, 3, maybe_written=False)  # refused before producing
    ledger.ack(ReportType.ACTIVITY, 0)
    entry = ledger.to_json()
    assert entry["acked"]["visit"] == [[0, 3], [4, 5]]
    assert entry["failed"]["visit"] == [[3, 3, 2]]
    assert ledger.maybe_written(ReportType.VISIT, 3) == 2
    assert ledger.maybe_written(ReportType.VISIT, 0) == 0
    again = ClientLedger.from_json(entry)
    assert again.to_json() == entry
