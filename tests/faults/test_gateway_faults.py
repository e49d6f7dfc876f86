"""Gateway faults: a worker killed while requests wait for Kafka's acknowledgement; broker connections reset."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from footfall import promtext
from stack.processes import Stack
from tests.faults.harness import Scenario, alive, children, cmdline, continued, group_pids, wait_for

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
    broker_pid = faults.broker_pid(stack)
    workers = http_workers(stack)
    faults.log(f"gateway http workers: {sorted(workers)}")
    run = faults.bench(stack, duration=18)
    wait_for(lambda: stack.accepted() > 0, 20, "the gateway to accept reports")
    kill_at = faults.rng.uniform(3.0, 7.0)
    time.sleep(max(0.0, run.started + kill_at - time.monotonic()))  # the seeded schedule
    victim = faults.rng.choice(sorted(workers))

    os.kill(broker_pid, signal.SIGSTOP)
    faults.log(f"SIGSTOP broker pid={broker_pid} (so requests are in flight)")
    with continued(broker_pid):
        wait_for(
            lambda: promtext.total(stack.metrics("gateway"), "footfall_gateway_inflight_requests") > 0,
            10,
            "requests in flight at the gateway",
            0.05,
        )
        os.kill(victim, signal.SIGKILL)
        faults.log(f"SIGKILL gateway worker pid={victim} with requests in flight")
        wait_for(lambda: not alive(victim), 10, "the killed worker to be gone")
    faults.log(f"SIGCONT broker pid={broker_pid}")

    # The gateway keeps serving (the surviving worker, or a replacement).
    accepted = stack.accepted()
    wait_for(lambda: stack.accepted() > accepted, 30, "the gateway to accept again after the kill")
    summary = run.wait()
    faults.log(f"bench: {summary['counts']} errors {summary['errors']}")
    assert stack.processes["gateway"].poll() is None, "the gateway's main process died with its worker"
    after = {pid for pid in children(stack.processes["gateway"].pid) if "spawn_main" in cmdline(pid)}
    faults.log(f"gateway worker processes after the kill: {sorted(after)} (killed {victim})")
    faults.settle_and_verify(stack, run).assert_exact(faults.diagnostics())


def _gateway_broker_connections(stack: Stack) -> list[int]:
    """Local ports of the gateway's established connections to the broker (its own, not the sink's)."""
    assert stack.broker is not None
    pids = set(group_pids(stack.processes["gateway"].pid))
    listed = subprocess.run(
        ["ss", "-tnpH", "state", "established", "dport", "=", f":{stack.broker.port}"],
        capture_output=True, text=True, check=True, timeout=10,
    )  # fmt: skip
    ports = []
    for line in listed.stdout.splitlines():
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            ports.append(int(line.split()[2].rpartition(":")[2]))  # Local Address:Port
    return ports


def _reset(local_ports: list[int], broker_port: int) -> None:
    """Abort those connections (``ss -K``): the gateway's socket errors, the broker gets a RST."""
    sports = " or ".join(f"sport = :{port}" for port in local_ports)
    subprocess.run(
        ["ss", "-K", "-tnH", "state", "established", f"( dport = :{broker_port} ) and ( {sports} )"],
        capture_output=True, check=True, timeout=10,
    )  # fmt: skip


def _ready(stack: Stack) -> bool:
    try:
        with urllib.request.urlopen(f"{stack.gateway_url}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.slow
def test_connection_reset_storm(faults: Scenario) -> None:
    """Reset the gateway's broker connections again and again under closed-loop load.

    Without an idempotent producer (the embedded broker grants no producer id) a batch whose
    connection broke after it was sent has an unknown outcome: re-sending it could store it
    twice, so the gateway answers 503 for it and the client decides. Every 200 must be in the
    files exactly once (``duplicated=0``), and the gateway must serve again within seconds of
    the storm: a fresh load right after it gets its 200s. Only the gateway's own connections
    are reset, so the verdict is the gateway's (the sink's resets have their own test).
    """
    stack = faults.stack()
    assert stack.broker is not None
    run = faults.bench(stack, duration=16, extra=("--rate", "0"))  # closed loop: 16 clients back to back
    wait_for(lambda: stack.accepted() > 0, 20, "the gateway to accept reports")
    resets = 0
    for _ in range(8):  # bounded: 8 resets, ~1.5 s apart
        time.sleep(faults.rng.uniform(1.0, 2.0))  # the seeded schedule, not a wait
        ports = _gateway_broker_connections(stack)
        if ports:
            _reset(ports, stack.broker.port)
            resets += 1
            faults.log(f"reset {len(ports)} gateway->broker connections (local ports {ports})")
    assert resets >= 4, "too few connections to reset: the storm did not happen"
    storm = run.wait()
    faults.log(f"storm bench: {storm['counts']} errors {storm['errors']}")
    storm_over = time.monotonic()

    wait_for(lambda: _ready(stack), 15, "/readyz to turn ready after the storm")
    faults.log(f"ready {time.monotonic() - storm_over:.1f}s after the storm")
    after = faults.bench(stack, duration=5, extra=("--rate", "0"), retries=0)
    calm = after.wait()
    faults.log(f"bench after the storm: {calm['counts']} errors {calm['errors']}")
    counts = calm["counts"]
    assert counts["ok"] > 0 and counts["failed"] <= counts["ok"] // 100, (
        f"the gateway did not serve again after the storm: {counts}\n{faults.diagnostics()}"
    )

    for bench in (run, after):
        faults.settle_and_verify(stack, bench).assert_exact(faults.diagnostics())
