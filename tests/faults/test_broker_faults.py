"""Broker faults: a pause (a network partition that loses nothing), and a broker absent at gateway start-up.

"Broker restarted" is not here: the embedded broker keeps its data in memory, so a restart
loses every record and says nothing about Footfall. Run that scenario against real Kafka
(docs/security.md, "Fault suite").
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from stack.broker import EmbeddedBroker, free_port
from tests.faults.harness import (
    PROBE_USER,
    Scenario,
    continued,
    count_lines_containing,
    post_probe,
    subprocess_env,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(180)]


def _no_server_errors(summary: dict[str, object]) -> None:
    by_status = summary["errors"]["by_status"]  # type: ignore[index]
    bad = {status: n for status, n in by_status.items() if str(status).startswith("5") and str(status) != "503"}
    assert not bad, f"the gateway answered server errors other than 503: {bad}"


def test_broker_paused_then_resumed(faults: Scenario) -> None:
    """SIGSTOP the broker mid-load (every connection hangs, as in a partition), SIGCONT it, lose nothing."""
    stack = faults.stack()
    broker_pid = faults.broker_pid(stack)
    run = faults.bench(stack, duration=20)
    wait_for(lambda: stack.accepted() > 0, 20, "the gateway to accept reports")
    pause_at = faults.rng.uniform(3.0, 6.0)
    pause_for = faults.rng.uniform(6.0, 9.0)
    time.sleep(max(0.0, run.started + pause_at - time.monotonic()))  # the seeded schedule, not a wait

    os.kill(broker_pid, signal.SIGSTOP)
    faults.log(f"SIGSTOP broker pid={broker_pid} for {pause_for:.1f}s")
    with continued(broker_pid):
        paused = time.monotonic()
        # While the broker is gone the gateway must still answer, with 503 + Retry-After, not hang or 500.
        status, headers = post_probe(stack.gateway_url, timeout=15)
        faults.log(f"probe POST during the pause: {status} after {time.monotonic() - paused:.1f}s")
        assert status == 503, f"expected 503 while the broker is paused, got {status}"
        assert "Retry-After" in headers
        time.sleep(max(0.0, paused + pause_for - time.monotonic()))  # the seeded schedule
    faults.log(f"SIGCONT broker pid={broker_pid}")

    accepted_at_resume = stack.accepted()
    wait_for(lambda: stack.accepted() > accepted_at_resume, 30, "the gateway to accept again after the pause")
    summary = run.wait()
    faults.log(f"bench: {summary['counts']} errors {summary['errors']}")
    _no_server_errors(summary)
    assert summary["counts"]["reports_acked"] > 0
    result = faults.settle_and_verify(stack, run)
    # The probe got a 503, so it may or may not have landed (the ack came after the timeout); at most once.
    probes = count_lines_containing(stack.config.record_directory, PROBE_USER)
    assert probes <= 1, f"the probe report landed {probes} times"
    result.assert_exact(faults.diagnostics(), probes_landed=probes)


def test_broker_unreachable_at_gateway_start(faults: Scenario) -> None:
    """No broker: the gateway waits (not ready, no 2xx), then serves once the broker appears; exact landing."""
    port = free_port()
    stack = faults.stack(start=False, brokers=f"127.0.0.1:{port}", gateway_args=("--startup-timeout", "60"))
    appear_after = faults.rng.uniform(3.0, 6.0)
    gateway = threading.Thread(target=stack.start_role, args=("gateway", 90.0), daemon=True)
    faults.log(f"gateway starting with no broker at 127.0.0.1:{port}; broker appears after {appear_after:.1f}s")
    started = time.monotonic()
    gateway.start()
    # 1. Before the broker exists the gateway answers nothing with 2xx (it is not even listening yet).
    while time.monotonic() < started + appear_after:
        wait_for(lambda: "gateway" in stack.processes, 10, "the gateway process")
        assert stack.processes["gateway"].poll() is None, stack.log_tail("gateway")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", stack.ports["gateway"])) == 0:
                status, _headers = post_probe(stack.gateway_url, timeout=10)
                assert status >= 500, f"the gateway answered {status} with no broker"
        time.sleep(0.5)  # the seeded schedule: keep probing until the broker appears
    # 2. The broker appears on the address the gateway was given.
    broker = EmbeddedBroker(port=port, log_path=faults.logs / "broker.log").start()
    faults.defer(lambda: (stack.stop(), broker.stop()))  # the gateway drains before the broker goes
    faults.log(f"broker started on 127.0.0.1:{port} (pid {broker.pid})")
    gateway.join(90)
    assert not gateway.is_alive(), "the gateway did not become ready after the broker appeared"
    assert "gateway" in stack.processes and stack.processes["gateway"].poll() is None, stack.log_tail("gateway")
    faults.log(f"gateway ready {time.monotonic() - started:.1f}s after it started")
    stack.start_role("sink")
    run = faults.bench(stack, duration=8)
    summary = run.wait()
    assert summary["counts"]["reports_acked"] > 0, summary["counts"]
    _no_server_errors(summary)
    result = faults.settle_and_verify(stack, run)
    probes = count_lines_containing(stack.config.record_directory, PROBE_USER)  # none was answered 2xx
    result.assert_exact(faults.diagnostics(), probes_landed=probes)


def test_gateway_gives_up_cleanly_when_the_broker_never_comes(faults: Scenario) -> None:
    """No broker within --startup-timeout: exit non-zero with a message that names the broker address."""
    port = free_port()
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable, "-m", "gateway", "--brokers", f"127.0.0.1:{port}", "--port", str(free_port()),
            "--workers", "1", "--startup-timeout", "3",
        ],
        capture_output=True, text=True, timeout=60, env=subprocess_env(), check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    faults.log(f"gateway with no broker exited {done.returncode} after {elapsed:.1f}s")
    assert done.returncode != 0
    assert elapsed < 30, "the gateway ignored --startup-timeout"
    assert f"127.0.0.1:{port}" in done.stderr + done.stdout, done.stderr[-2000:]
