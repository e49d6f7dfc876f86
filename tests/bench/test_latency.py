"""HDR latency math on known inputs, and the open model's coordinated-omission correction."""

from __future__ import annotations

import pytest

from bench.latency import LatencyHistogram


def test_percentiles_of_a_uniform_series() -> None:
    hist = LatencyHistogram()
    for ms in range(1, 1001):  # 1 ms … 1000 ms
        hist.record(ms / 1000)
    s = hist.summary()
    assert s["count"] == 1000
    # HDR with 3 significant digits: within 0.1 % of the exact value.
    for name, exact in (("p50", 500), ("p90", 900), ("p99", 990), ("p99.9", 999), ("max", 1000)):
        assert s[name] == pytest.approx(exact, rel=1e-3), name
    assert s["mean"] == pytest.approx(500.5, rel=1e-3)


def test_empty_histogram_reports_zeros() -> None:
    s = LatencyHistogram().summary()
    assert s == {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "p99.9": 0.0, "max": 0.0, "mean": 0.0}


def test_merge_and_encode_round_trip() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    for _ in range(99):
        a.record(0.001)
    b.record(2.0)
    merged = LatencyHistogram.decode(a.encode())
    merged.add(LatencyHistogram.decode(b.encode()))
    assert merged.count == 100
    assert merged.percentile_ms(50) == pytest.approx(1.0, rel=1e-3)
    assert merged.max_ms() == pytest.approx(2000, rel=1e-3)
    assert LatencyHistogram.decode("").count == 0


def test_latency_from_intended_time_shows_a_stall() -> None:
    """A 1 s stall at 100 requests/s: measured from the intended send time, ~100 requests see it.

    Requests are scheduled every 10 ms; the server answers in 1 ms except that it freezes for
    1 s at t = 1 s. Measured from the actual send time (what a closed-loop tool reports) only
    one request is slow, so p99 hides the stall; from the intended time, the ~100 requests
    queued behind it wait 1000, 990, … 10 ms, so p90 and p99 show it.
    """
    intended = [i * 0.010 for i in range(1000)]  # 10 s at 100/s
    corrected, naive = LatencyHistogram(), LatencyHistogram()
    free_at = 0.0
    for t in intended:
        start = max(t, free_at)
        service = 1.0 if abs(t - 1.0) < 1e-9 else 0.001
        done = start + service
        free_at = done
        corrected.record(done - t)
        naive.record(done - start)
    assert naive.percentile_ms(99) == pytest.approx(1.0, rel=1e-2)
    assert naive.max_ms() == pytest.approx(1000, rel=1e-2)
    assert corrected.percentile_ms(99) > 900
    assert corrected.percentile_ms(90) > 1.0
    assert corrected.percentile_ms(50) == pytest.approx(1.0, rel=1e-2)
