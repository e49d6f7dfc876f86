"""Micro-benchmarks of the bench's per-request body work (``pytest perf/bench_bodies.py --benchmark-enable``).

A request body = one simulated day of one client (12 reports in the original profile),
encoded by msgspec and gzip'd at level 1 (ISA-L when ``isal`` is installed, else zlib).
The bench's budget is ~35 µs of CPU per request all in; these show how much of it the
data takes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import zlib

import pytest

from bench.profiles import OriginalProfile, RealisticProfile, compress_body, encode_body
from footfall.reports import ReportType

pytestmark = pytest.mark.benchmark(group="bench")


def test_original_generate_visits(benchmark) -> None:  # type: ignore[no-untyped-def]
    client = OriginalProfile(seed=1).client(0)
    days = itertools.count()
    benchmark(lambda: client.reports(ReportType.VISIT, next(days)))


def test_original_fast_path_gzip(benchmark) -> None:  # type: ignore[no-untyped-def]
    """What the bench does per request in the original profile: ``encoded`` + gzip."""
    client = OriginalProfile(seed=1).client(0)
    days = itertools.count()
    body = benchmark(lambda: compress_body(client.encoded(ReportType.VISIT, next(days))[0], gzip=True))
    assert body[:2] == b"\x1f\x8b"


def test_original_generate_encode_gzip(benchmark) -> None:  # type: ignore[no-untyped-def]
    """The same through footfall.generator's Structs (the reference the fast path must equal)."""
    client = OriginalProfile(seed=1).client(0)
    days = itertools.count()
    body = benchmark(lambda: encode_body(client.reports(ReportType.VISIT, next(days)), gzip=True))
    assert body[:2] == b"\x1f\x8b"


def test_original_generate_encode_no_gzip(benchmark) -> None:  # type: ignore[no-untyped-def]
    client = OriginalProfile(seed=1).client(0)
    days = itertools.count()
    benchmark(lambda: encode_body(client.reports(ReportType.VISIT, next(days)), gzip=False))


def test_gzip_zlib_level1_reference(benchmark) -> None:  # type: ignore[no-untyped-def]
    """zlib at level 1 on the same kind of body: the fallback when isal is missing."""
    client = OriginalProfile(seed=1).client(0)
    raws = [encode_body(client.reports(ReportType.VISIT, d), gzip=False) for d in range(256)]
    cycle = itertools.cycle(raws)
    benchmark(lambda: zlib.compress(next(cycle), 1, wbits=31))


def test_realistic_day(benchmark) -> None:  # type: ignore[no-untyped-def]
    """One realistic day (visits and activities together, ~6 reports), encoded and gzip'd."""
    profile = RealisticProfile(seed=1, start_date=dt.date(2018, 1, 1))
    client = profile.client(0)
    days = itertools.count()

    def one() -> bytes:
        day = next(days)
        return encode_body(client.reports(ReportType.VISIT, day), gzip=True) + encode_body(
            client.reports(ReportType.ACTIVITY, day), gzip=True
        )

    benchmark(one)


def test_verify_120k_reports(benchmark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``bench.verify.verify`` over 120,000 landed reports (200 clients x 25 days x 2 types x 12)."""
    from bench.verify import verify
    from perf.verify_scale import build

    run_file, total = build(tmp_path, 200, 25)
    assert total == 120_000
    result = benchmark.pedantic(verify, args=(run_file, tmp_path / "records"), rounds=3, iterations=1)
    assert result.ok and result.acknowledged == 120_000
