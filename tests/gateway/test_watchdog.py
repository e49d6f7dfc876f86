"""A gateway worker that dies (kill -9, OOM) is restarted; the gateway keeps answering."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from tests.gateway.conftest import GatewayProcess, original_body

pytestmark = pytest.mark.integration


def test_killed_workers_are_restarted(broker: str, gateway_factory: Callable[..., GatewayProcess]) -> None:
    gw = gateway_factory(["--brokers", broker, "--workers", "2"])
    first = gw.worker_pids(2)
    for pid in first:
        os.kill(pid, signal.SIGKILL)  # every worker: only the main process is left

    body, _ = original_body("visit", seed=11)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        try:
            status = httpx.post(gw.url + "/api/visit/v1", content=body, headers=headers, timeout=2).status_code
        except httpx.HTTPError:
            status = None
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200, "the gateway did not serve again after its workers were killed"
    deadline = time.monotonic() + 10
    while not ({int(p.stem) for p in gw.metrics_dir.glob("*.json")} - first) and time.monotonic() < deadline:
        time.sleep(0.1)  # new workers write their first metrics snapshot after a second
    assert {int(p.stem) for p in gw.metrics_dir.glob("*.json")} - first, "no new worker process"
    assert "gateway worker died; restarting it" in gw.log.read_text()
    assert gw.stop() == 0
