"""The per-report gateway (``python -m perf.references.per_report``): the real gateway, its producer swapped.

Run the way ``perf e2e`` runs it: a :class:`~stack.processes.Stack` whose gateway module is the
reference. It serves, its acknowledged reports land, and every worker's producer is the per-report one.
"""

from __future__ import annotations

import datetime as dt
import gzip
import random
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from footfall.generator import day_start_ms, original_visits, user_id
from footfall.reports import encode_report
from stack.processes import Stack, StackConfig

pytestmark = pytest.mark.integration

MODULE = "perf.references.per_report"


def _producers_started(log: Path) -> list[str]:
    """The producer class each gateway worker logged at its start."""
    lines = (orjson.loads(line) for line in log.read_bytes().splitlines() if line.startswith(b"{"))
    return [line["producer"] for line in lines if line.get("message") == "producer started"]


@pytest.mark.slow
def test_the_per_report_gateway_serves_and_its_reports_land(broker: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:10]
    config = StackConfig(
        record_directory=tmp_path / "records",
        log_directory=tmp_path / "logs",
        brokers=broker,
        visit_topic=f"visit-{suffix}",
        activity_topic=f"activity-{suffix}",
        group=f"footfall-sink-{suffix}",
        gateway_workers=2,
        sink_workers=1,
        dashboard=False,
        gateway_module=MODULE,
        sink_args=("--flush-interval", "0.2"),
    )
    rng = random.Random(17)
    visits = original_visits(rng, user_id(rng), day_start_ms(dt.date(2031, 1, 17), 0))
    body = gzip.compress(b"[" + b",".join(encode_report(v) for v in visits) + b"]")
    with Stack(config) as stack:
        assert stack.command("gateway")[:3] == [sys.executable, "-m", MODULE]
        assert stack.command("sink")[:3] == [sys.executable, "-m", "sink"]
        response = httpx.post(
            f"{stack.gateway_url}/api/visit/v1",
            content=body,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": 12}
        assert stack.wait_landed(timeout=30)
        assert stack.landed() == 12
        log = stack.log_path("gateway")
        deadline = time.monotonic() + 10
        while len(_producers_started(log)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _producers_started(log) == ["PerReportProducer", "PerReportProducer"]
