"""Gateway faults: a worker killed with SIGKILL while requests wait for Kafka's acknowledgement."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import pytest

from stack.processes import Stack, metric_total
from tests.faults.harness import Scenario, alive, children, cmdline, continued, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(180)]


def http_workers(stack: Stack, timeout: float = 10.0) -> set[int]:
    """Pids of the gateway's HTTP workers: the children that answer ``/healthz`` (which returns its pid)."""
    candidates = {pid for pid in children(stack.processes["gateway"].pid) if "spawn_main" in cmdline(pid)}
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(seen) < min(len(candidates), stack.config.gateway_workers):
        with urllib.request.urlopen(f"{stack.gateway_url}/healthz", timeout=2) as response:  # a new connection each
            seen.add(int(json.loads(response.read())["pid"]))
    assert seen, "no gateway worker answered /healthz"
    return seen & candidates or seen


def test_gateway_worker_killed_mid_request(faults: Scenario) -> None:
    """SIGKILL one gateway worker while its requests await the broker's ack; nothing acknowledged is lost.

    To be sure requests are in flight at the kill, the broker is paused first (their acks
    cannot come), the kill lands while the gateway reports in-flight requests, then the
    broker resumes. The killed worker's clients see a reset connection and retry.
    """
    stack = faults.stack()
    assert stack.broker is not None
    workers = http_workers(stack)
    faults.log(f"gateway http workers: {sorted(workers)}")
    run = faults.bench(stack, duration=18)
    wait_for(lambda: stack.accepted() > 0, 20, "the gateway to accept reports")
    kill_at = faults.rng.uniform(3.0, 7.0)
    time.sleep(max(0.0, run.started + kill_at - time.monotonic()))  # the seeded schedule
    victim = faults.rng.choice(sorted(workers))

    os.kill(stack.broker.pid, signal.SIGSTOP)
    faults.log(f"SIGSTOP broker pid={stack.broker.pid} (so requests are in flight)")
    with continued(stack.broker.pid):
        wait_for(
            lambda: metric_total(stack.metrics("gateway"), "footfall_gateway_inflight_requests") > 0,
            10,
            "requests in flight at the gateway",
            0.05,
        )
        os.kill(victim, signal.SIGKILL)
        faults.log(f"SIGKILL gateway worker pid={victim} with requests in flight")
        wait_for(lambda: not alive(victim), 10, "the killed worker to be gone")
    faults.log(f"SIGCONT broker pid={stack.broker.pid}")

    # The gateway keeps serving (the surviving worker, or a replacement).
    accepted = stack.accepted()
    wait_for(lambda: stack.accepted() > accepted, 30, "the gateway to accept again after the kill")
    summary = run.wait()
    faults.log(f"bench: {summary['counts']} errors {summary['errors']}")
    assert stack.processes["gateway"].poll() is None, "the gateway's main process died with its worker"
    after = {pid for pid in children(stack.processes["gateway"].pid) if "spawn_main" in cmdline(pid)}
    faults.log(f"gateway worker processes after the kill: {sorted(after)} (killed {victim})")
    faults.settle_and_verify(stack, run).assert_exact(faults.diagnostics())
