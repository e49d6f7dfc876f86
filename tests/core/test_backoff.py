"""Backoff: the one retry-delay formula (doubling from ``first``, capped) and full jitter."""

from __future__ import annotations

import random

import pytest

from footfall.backoff import Backoff, full_jitter


def test_delays_double_from_the_first_and_stop_at_the_cap() -> None:
    backoff = Backoff(first=0.1, cap=1.0)
    assert [backoff.delay(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_a_first_equal_to_the_cap_is_a_constant_delay() -> None:
    backoff = Backoff(first=2.0, cap=2.0)
    assert {backoff.delay(n) for n in (1, 2, 50)} == {2.0}


def test_a_huge_attempt_number_is_the_cap_not_an_overflow() -> None:
    # A loop that retries for days counts past 1024 (2.0 ** 1024 overflows a float).
    assert Backoff(first=0.5, cap=30.0).delay(10**6) == 30.0


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_count_from_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt counts from 1"):
        Backoff(first=0.1, cap=1.0).delay(attempt)


@pytest.mark.parametrize(("first", "cap"), [(0.0, 1.0), (-0.1, 1.0), (2.0, 1.0)])
def test_a_backoff_that_cannot_back_off_is_refused(first: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < first <= cap"):
        Backoff(first=first, cap=cap)


def test_full_jitter_spreads_over_zero_to_the_delay() -> None:
    rng = random.Random(17)
    draws = [full_jitter(4.0, rng) for _ in range(2000)]
    assert all(0.0 <= d <= 4.0 for d in draws)
    # Uniform over [0, 4]: both halves are used about equally, not only one end.
    low = sum(d < 2.0 for d in draws)
    assert 800 < low < 1200
    assert min(draws) < 0.1
    assert max(draws) > 3.9


def test_full_jitter_is_reproducible_from_the_callers_rng() -> None:
    assert [full_jitter(1.0, random.Random(5)) for _ in range(3)] == [full_jitter(1.0, random.Random(5))] * 3
