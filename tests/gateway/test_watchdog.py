"""A gateway worker that dies (kill -9, OOM) is restarted; a dead shared-state manager stops the gateway cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from tests.faults.harness import alive, children, cmdline
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


def test_a_dead_shared_state_manager_stops_the_gateway_cleanly(
    broker: str, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    """kill -9 of Sanic's shared-state manager (the child that is neither a worker nor the resource
    tracker): the gateway stops its workers and exits non-zero at once, with one line, no traceback."""
    gw = gateway_factory(["--brokers", broker, "--workers", "2", "--shutdown-timeout", "5"])
    assert gw.proc is not None
    workers = gw.worker_pids(2)
    family = children(gw.proc.pid)
    (manager,) = [pid for pid in family if pid not in workers and "spawn_main" in cmdline(pid)]
    os.kill(manager, signal.SIGKILL)

    code = gw.proc.wait(15)  # at once: within --shutdown-timeout and some slack, not a minute later
    log = gw.log.read_text()
    assert code != 0, log[-3000:]
    assert "error: the gateway's shared-state manager process died" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in family if alive(pid)], "gateway processes outlived the main process"
    gw.log.unlink(missing_ok=True)  # kept by the fixture after a non-zero exit; this one was expected
    shutil.rmtree(gw.metrics_dir, ignore_errors=True)
