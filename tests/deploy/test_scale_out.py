"""Scale-out on one machine: two gateways behind one port, two sink instances in one group.

What docker-compose.yml deploys (HAProxy -> gateway replicas; sink replicas in one consumer
group on one shared record directory), with real processes on loopback:

    bench --(HTTP, one port)--> round-robin TCP balancer --> gateway A, gateway B
                                                                  | Kafka (4 partitions)
                           records/ <-- sink A + sink B (two supervisors, one group)

The proof is the bench's own ledger: every report the gateways acknowledged landed exactly
once (``bench verify``: lost=0 duplicated=0 unexpected=0), and each gateway and each sink did
part of the work, so the result is not one instance doing everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from footfall import promtext
from stack.broker import free_port
from stack.processes import Stack, StackConfig

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BENCH_SECONDS = 8
LAND_TIMEOUT_S = 30.0


class RoundRobinBalancer:
    """A TCP balancer on one loopback port: each new connection goes to the next backend.

    The test's stand-in for HAProxy (deploy/haproxy.cfg): connection-level balancing, so a
    client's keep-alive connection stays on one gateway, as it does behind HAProxy.
    """

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.port = free_port()
        self.connections = [0] * len(backends)
        self._next = itertools.cycle(range(len(backends)))
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="balancer", daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> RoundRobinBalancer:
        self._thread.start()
        assert self._ready.wait(10), "balancer did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        index = next(self._next)
        self.connections[index] += 1
        host, port = self.backends[index]
        try:
            server_r, server_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def instances(broker: str, tmp_path: Path) -> Iterator[list[Stack]]:
    """Two independent (gateway, sink) pairs on one broker, topics, group and record directory."""
    suffix = uuid.uuid4().hex[:10]
    shared = {
        "record_directory": tmp_path / "records",
        "brokers": broker,
        "visit_topic": f"visit-{suffix}",
        "activity_topic": f"activity-{suffix}",
        "group": f"sink-{suffix}",
        "partitions": 4,
        "gateway_workers": 1,
        "sink_workers": 1,
        "dashboard": False,
    }
    stacks = [Stack(StackConfig(**shared, log_directory=tmp_path / f"logs-{name}")) for name in ("a", "b")]  # type: ignore[arg-type]
    try:
        for stack in stacks:
            stack.start(timeout=60)
        yield stacks
    finally:
        # Gateways first (nothing new arrives), then sinks; each SIGTERM, then SIGKILL after 20 s.
        for stack in stacks:
            stack.stop_role("gateway", timeout=20)
        for stack in stacks:
            stack.stop(timeout=20)


def _total(stacks: list[Stack], role: str, metric: str) -> list[float]:
    return [promtext.total(stack.metrics(role), metric) for stack in stacks]


def test_two_gateways_and_two_sinks_land_every_report_exactly_once(instances: list[Stack], tmp_path: Path) -> None:
    started = time.monotonic()
    a, b = instances
    config = a.config
    seed = random.randrange(2**31)
    print(f"seed={seed} topics={config.visit_topic},{config.activity_topic} group={config.group}")
    run_json = tmp_path / "run.json"

    # 1. Both sink instances hold partitions (the group has settled) before the load starts.
    deadline = time.monotonic() + LAND_TIMEOUT_S
    assigned = _total(instances, "sink", "footfall_sink_assigned_partitions")
    while min(assigned) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        assigned = _total(instances, "sink", "footfall_sink_assigned_partitions")
    print(f"partitions per sink: {assigned}")
    assert min(assigned) > 0, f"one sink instance got no partitions: {assigned}"

    # 2. Load through one port, spread over both gateways.
    with RoundRobinBalancer([("127.0.0.1", a.ports["gateway"]), ("127.0.0.1", b.ports["gateway"])]) as balancer:
        bench_log = tmp_path / "bench.log"
        with bench_log.open("wb") as log:
            bench = subprocess.run(
                [
                    sys.executable, "-m", "bench",
                    "--web-service", f"http://127.0.0.1:{balancer.port}",
                    "--concurrent-clients", "16",
                    "--report-interval", "0.25",
                    "--duration", str(BENCH_SECONDS),
                    "--seed", str(seed),
                    "--quiet",
                    "--json", str(run_json),
                ],
                stdout=log, stderr=subprocess.STDOUT, env=_env(), timeout=BENCH_SECONDS + 40, check=False,
            )  # fmt: skip
        assert bench.returncode == 0, bench_log.read_text()[-3000:]
        assert min(balancer.connections) > 0, f"balancer connections per gateway: {balancer.connections}"

    accepted = _total(instances, "gateway", "footfall_gateway_reports_accepted_total")
    print(f"accepted per gateway: {accepted}")
    assert all(n > 0 for n in accepted), f"both gateways must take part: {accepted}"

    # 3. Wait (with a deadline) until the two sinks together have landed every accepted report.
    deadline = time.monotonic() + LAND_TIMEOUT_S
    written = _total(instances, "sink", "footfall_sink_records_written_total")
    while sum(written) < sum(accepted) and time.monotonic() < deadline:
        time.sleep(0.25)
        written = _total(instances, "sink", "footfall_sink_records_written_total")
    print(f"written per sink: {written}")
    assert sum(written) >= sum(accepted), (
        f"sinks wrote {written} of {sum(accepted)} within {LAND_TIMEOUT_S}s\n{a.log_tail('sink')}\n{b.log_tail('sink')}"
    )
    assert all(n > 0 for n in written), f"both sinks in the group must own partitions: {written}"

    # 4. The bench's ledger against the files: every acknowledged report exactly once. The sink
    #    metrics are snapshots (up to a second old), so a first "lost" is retried until the deadline.
    command = [
        sys.executable, "-m", "bench", "verify", str(run_json),
        "--record-directory", str(config.record_directory),
        "--visit-topic", config.visit_topic,
        "--activity-topic", config.activity_topic,
    ]  # fmt: skip
    while True:
        verify = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=60, check=False)
        output = verify.stdout + verify.stderr
        if verify.returncode == 0 or "duplicated=0" not in output or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print(output)
    assert verify.returncode == 0, output
    assert "lost=0" in output and "duplicated=0" in output and "unexpected=0" in output, output
    print(f"scale-out test body took {time.monotonic() - started:.1f}s")
