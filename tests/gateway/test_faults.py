"""Broker paused (SIGSTOP) under load: fast 503s, bounded memory, readiness, recovery, no lost 200s."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from footfall.reports import encode_report
from stack.broker import EmbeddedBroker
from tests.gateway.conftest import JSON_GZIP, consume_all, original_body

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PRODUCE_TIMEOUT = 1.5


@dataclass
class Outcome:
    seed: int
    status: int
    started: float
    elapsed: float


def _rss(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())[1]) * 1024  # type: ignore[index]


async def _poll(predicate: Any, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} within {timeout}s")


async def test_broker_paused_under_load(own_broker: EmbeddedBroker, gateway_factory: Any) -> None:
    gw = gateway_factory(
        [
            "--brokers",
            own_broker.bootstrap,
            "--workers",
            "1",
            "--produce-timeout-ms",
            str(int(PRODUCE_TIMEOUT * 1000)),
            "--request-timeout-ms",
            "3000",
            "--max-inflight-bytes",
            str(256 * 1024),
            "--retry-after",
            "2",
        ]
    )
    (worker,) = gw.worker_pids(1)
    outcomes: list[Outcome] = []
    seeds = iter(range(10**9))
    stop = asyncio.Event()

    async with httpx.AsyncClient(base_url=gw.url, timeout=20, limits=httpx.Limits(max_connections=32)) as client:

        async def load() -> None:
            while not stop.is_set():
                seed = next(seeds)
                body, _ = original_body("visit", seed=seed)
                started = time.monotonic()
                response = await client.post("/api/visit/v1", content=body, headers=JSON_GZIP)
                outcomes.append(Outcome(seed, response.status_code, started, time.monotonic() - started))
                if response.status_code == 503:
                    assert response.headers["retry-after"] == "2"
                    await asyncio.sleep(0.02)

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        async def not_ready() -> bool:
            return (await client.get("/readyz")).status_code == 503

        clients = [asyncio.ensure_future(load()) for _ in range(16)]
        await asyncio.sleep(1.0)
        assert outcomes and {o.status for o in outcomes} == {200}
        baseline = _rss(worker)

        # 1. pause the broker: answers turn to 503 within the produce timeout, readiness goes false.
        os.kill(own_broker.pid, signal.SIGSTOP)
        paused = time.monotonic()
        try:
            await _poll(not_ready, 5.0, "/readyz did not turn false")
            peak = baseline
            while time.monotonic() - paused < 4.0:
                peak = max(peak, _rss(worker))
                await asyncio.sleep(0.1)
        finally:
            os.kill(own_broker.pid, signal.SIGCONT)
        resumed = time.monotonic()
        during = [o for o in outcomes if paused + 0.1 < o.started and o.started + o.elapsed < resumed]
        assert during, "no request completed while the broker was paused"
        assert {o.status for o in during} == {503}
        assert max(o.elapsed for o in during) < PRODUCE_TIMEOUT + 0.5
        assert peak - baseline < 32 * 1024 * 1024, (baseline, peak)

        # 2. resume: readiness and 200s come back.
        await _poll(ready, 20.0, "/readyz did not turn true after SIGCONT")
        n = len(outcomes)

        async def recovered() -> bool:
            return sum(1 for o in outcomes[n:] if o.status == 200) >= 50

        await _poll(recovered, 20.0, "no 200s after recovery")
        stop.set()
        await asyncio.gather(*clients)

    # 3. every report that got a 200 is in Kafka exactly as sent.
    ok = [o for o in outcomes if o.status == 200]
    assert {o.status for o in outcomes} <= {200, 503}
    expected = {}
    for o in ok:
        for report in original_body("visit", seed=o.seed)[1]:
            expected[encode_report(report)] = str(report.userId).encode()
    records = await consume_all(own_broker.bootstrap, "visit", len(expected), timeout=30)
    got = {}
    for rec in records:
        got.setdefault(rec.value, rec.key)
    missing = [v for v in expected if v not in got]
    assert not missing, f"{len(missing)} acknowledged reports are not in Kafka"
    assert all(got[v] == k for v, k in expected.items())
    sent_any = {encode_report(r) for o in outcomes for r in original_body("visit", seed=o.seed)[1]}
    assert set(got) <= sent_any  # nothing that was never sent
