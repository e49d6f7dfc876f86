"""Closed, ticking and open modes against a fake gateway: counts, rates, day advance, processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench.verify import verify
from footfall.layout import MS_PER_DAY
from footfall.reports import ReportType
from tests.bench.conftest import run_bench
from tests.bench.fake_gateway import FakeGateway

START_MS = 1_514_764_800_000


async def test_closed_loop_sends_exactly_the_budget(gateway: FakeGateway) -> None:
    result, content = await run_bench(gateway.url, concurrent_clients=3, requests=60)
    assert gateway.requests == 60
    assert gateway.by_path["/api/visit/v1"] == 30 and gateway.by_path["/api/activity/v1"] == 30
    assert gateway.encodings == {"gzip": 60}
    assert result.totals.ok == 60 and result.totals.reports_acked == 720
    assert content["counts"]["requests"] == 60
    assert content["latency_ms"]["count"] == 60
    assert content["mode"] == "closed"
    assert content["latency_ms"]["p50"] > 0


async def test_no_gzip(gateway: FakeGateway) -> None:
    await run_bench(gateway.url, requests=4, gzip=False)
    assert gateway.encodings == {"identity": 4}


async def test_ticking_mode_sends_one_day_per_client_per_interval(gateway: FakeGateway) -> None:
    """4 clients, 0.25 s interval, 1.5 s: about 6 ticks each, 2 requests per tick."""
    result, content = await run_bench(gateway.url, concurrent_clients=4, report_interval=0.25, duration=1.5)
    # Generous bounds: 4 clients x ~6 ticks x 2 requests = 48.
    assert 24 <= gateway.requests <= 64, gateway.requests
    assert result.totals.failed == 0
    assert content["mode"] == "ticking"
    # Each client advanced one day per tick: its days are a prefix 0..n-1 with both types.
    for entry in content["ledger"]["clients"]:
        visits, activities = entry["acked"]["visit"], entry["acked"]["activity"]
        assert visits[0][0] == 0 and len(visits) == 1
        assert activities == visits or activities[0][1] == visits[0][1] - 1


async def test_open_model_keeps_the_rate(gateway: FakeGateway) -> None:
    result, content = await run_bench(gateway.url, concurrent_clients=4, rate=100, duration=1.5)
    # 100/s for 1.5 s = 150 arrivals (+1 at t=0); generous bounds for a loaded machine.
    assert 120 <= gateway.requests <= 160, gateway.requests
    assert content["mode"] == "open"
    assert content["latency_from"] == "intended send time"
    assert result.totals.ok == gateway.requests
    # The scheduler's own lateness is recorded for every arrival it released.
    assert content["schedule_lag_ms"]["count"] >= gateway.requests


async def test_open_model_request_budget(gateway: FakeGateway) -> None:
    await run_bench(gateway.url, concurrent_clients=2, rate=500, requests=50)
    assert gateway.requests == 50


async def test_open_model_latency_includes_a_stall(tmp_path: Path) -> None:
    """The server holds request 10 for 0.6 s with one connection: later arrivals queue behind it."""
    with FakeGateway(stall=(10, 0.6)) as gw:
        _, content = await run_bench(gw.url, concurrent_clients=1, rate=50, duration=1.5)
    lat = content["latency_ms"]
    # ~30 requests queued behind the stall wait 600, 580, … ms from their intended time.
    assert lat["max"] >= 550
    assert lat["p90"] >= 100, lat


async def test_day_advances_only_after_success(tmp_path: Path) -> None:
    """Requests 3 and 4 (day 1's visits) get 503: the client resends day 1's visits, same bytes."""
    with FakeGateway(fail=lambda n, _t: (503, False) if n in (3, 4) else None) as gw:
        gw.keep_bodies = True
        result, content = await run_bench(gw.url, concurrent_clients=1, requests=8, max_error_rate=1.0)
    days = []
    for report_type, body in gw.bodies:
        first = msgspec.json.decode(body)[0]  # aiohttp un-gzipped it
        t = first["enterTime"] if report_type is ReportType.VISIT else first["startTime"]
        days.append((str(report_type), (t - START_MS) // MS_PER_DAY))
    assert days == [
        ("visit", 0), ("activity", 0),
        ("visit", 1), ("visit", 1), ("visit", 1), ("activity", 1),
        ("visit", 2), ("activity", 2),
    ]  # fmt: skip
    assert gw.bodies[2][1] == gw.bodies[3][1] == gw.bodies[4][1]  # a resend is the same bytes
    assert result.totals.failed == 2
    assert content["errors"]["by_status"] == {"503": 2}
    assert content["ledger"]["clients"][0]["failed"]["visit"] == [[1, 2, 2]]  # [day, attempts, maybe written]


async def test_retries_honour_retry_after(tmp_path: Path) -> None:
    with FakeGateway(fail=lambda n, _t: (503, False) if n % 2 == 1 else None) as gw:
        result, _ = await run_bench(gw.url, concurrent_clients=1, requests=4, retries=2)
    assert result.totals.ok == 4 and result.totals.failed == 0
    assert result.totals.attempts == 8
    assert result.totals.by_status == {"503": 4}


@pytest.mark.slow
async def test_processes_spread_clients_and_merge(tmp_path: Path, gateway: FakeGateway) -> None:
    run_file = tmp_path / "run.json"
    result, content = await run_bench(gateway.url, run_file, concurrent_clients=4, processes=2, requests=40)
    assert gateway.requests == 40
    assert result.totals.ok == 40 and result.workers_lost == 0
    assert sorted(e["client"] for e in content["ledger"]["clients"]) == [0, 1, 2, 3]
    assert content["latency_ms"]["count"] == 40
    outcome = verify(run_file, tmp_path / "records")
    assert outcome.ok and outcome.acknowledged == 480, outcome.line()


async def test_same_seed_same_data_in_every_mode_and_process_count(tmp_path: Path) -> None:
    """Client i's data depends on (seed, run id, i) only, not on the mode or how clients are spread."""
    runs: list[dict[str, Any]] = [
        {"concurrent_clients": 1, "requests": 6},
        {"concurrent_clients": 1, "requests": 6, "rate": 200.0},
        {"concurrent_clients": 2, "requests": 8, "rate": 400.0},
        {"concurrent_clients": 2, "requests": 8, "rate": 400.0, "processes": 2},
    ]
    bodies = []
    for overrides in runs:
        with FakeGateway() as gw:
            gw.keep_bodies = True
            await run_bench(gw.url, run_id=0x5EED, **overrides)
            bodies.append(sorted(b for _, b in gw.bodies))
    assert bodies[0] == bodies[1]
    assert bodies[2] == bodies[3]
    assert len(set(bodies[0]) & set(bodies[2])) == 4  # client 0, days 0 and 1, both types
