"""Gateway test fixtures: a fake producer for unit tests, a live gateway process for integration."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from footfall.generator import DEFAULT_START_DATE, day_start_ms, original_activities, original_visits, user_id
from gateway.app import create_app
from gateway.errors import BrokerDownError, ProduceTimeoutError, SaturatedError
from gateway.metrics import GatewayMetrics
from gateway.producer import Delivery, Headers, Record
from gateway.settings import GatewaySettings
from stack.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
JSON_GZIP = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def original_body(kind: str = "visit", seed: int = 1, day: int = 0) -> tuple[bytes, list[Any]]:
    """The original client's request: one day (12 reports) of one user, gzip'd JSON array."""
    rng = random.Random(seed)
    uid = user_id(rng)
    make = original_visits if kind == "visit" else original_activities
    reports = make(rng, uid, day_start_ms(DEFAULT_START_DATE, day))
    return gzip.compress(msgspec.json.encode(reports)), reports


@dataclass
class Submission:
    topic: str
    records: list[Record]
    headers: Headers
    timestamp_ms: int


@dataclass
class FakeProducer:
    """Satisfies gateway.producer.ReportProducer; ``mode`` decides what deliveries do."""

    mode: str = "ack"  # ack | fail | hang | saturated | down
    submissions: list[Submission] = field(default_factory=list)
    started: bool = False
    stopped: bool = False
    timeouts: int = 0
    _hanging: list[Delivery] = field(default_factory=list)

    @property
    def inflight_bytes(self) -> int:
        return 0

    @property
    def broker_reachable(self) -> bool:
        return self.mode != "down"

    @property
    def sender_alive(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.mode in {"ack", "fail"}

    async def start(self) -> None:
        self.started = True

    async def stop(self, grace: float) -> None:
        self.stopped = True

    async def submit(
        self, topic: str, records: Sequence[Record], headers: Headers, timestamp_ms: int
    ) -> list[Delivery]:
        if self.mode == "saturated":
            raise SaturatedError("cap reached")
        if self.mode == "down":
            raise BrokerDownError("Kafka is unreachable")
        self.submissions.append(Submission(topic, list(records), headers, timestamp_ms))
        fut: Delivery = asyncio.get_running_loop().create_future()
        if self.mode == "ack":
            fut.set_result(None)
        elif self.mode == "fail":
            fut.set_result(RuntimeError("broker said no"))
        else:  # the broker never answers: the delivery's deadline resolves it

            def expire() -> None:
                self.timeouts += 1
                fut.set_result(ProduceTimeoutError("no ack"))

            asyncio.get_running_loop().call_later(0.1, expire)
            self._hanging.append(fut)
        return [fut]


def make_settings(**overrides: Any) -> GatewaySettings:
    base: dict[str, Any] = {
        "brokers": "127.0.0.1:9",
        "produce_timeout_ms": 200,
        "max_body_bytes": 64 * 1024,
        "max_decompressed_bytes": 256 * 1024,
    }
    base.update(overrides)
    return GatewaySettings(**base)


@pytest.fixture
def fake_app() -> Callable[..., tuple[Any, FakeProducer]]:
    """``app, producer = fake_app(mode="ack", **settings)``: the real app over a fake producer."""

    def make(mode: str = "ack", **overrides: Any) -> tuple[Any, FakeProducer]:
        producer = FakeProducer(mode=mode)

        def factory(settings: GatewaySettings, metrics: GatewayMetrics) -> FakeProducer:
            return producer

        app = create_app(make_settings(**overrides), producer_factory=factory, name=f"gw_{uuid.uuid4().hex[:10]}")
        app.ctx.ready_grace = 0.0
        return app, producer

    return make


class GatewayProcess:
    """``python -m gateway`` as a child process on a free port."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="footfall-gateway-test-metrics-"))
        self.args = ["--host", "127.0.0.1", "--port", str(self.port), "--metrics-dir", str(self.metrics_dir), *args]
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(f"/tmp/footfall-gateway-test-{self.port}.log")

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gateway exited early:\n{self.log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"gateway not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def worker_pids(self, count: int, timeout: float = 10.0) -> set[int]:
        """Pids of the ``count`` workers (each writes ``<pid>.json`` into the metrics directory every second)."""
        deadline = time.monotonic() + timeout
        while True:
            pids = {int(p.stem) for p in self.metrics_dir.glob("*.json")}
            if len(pids) >= count or time.monotonic() > deadline:
                assert len(pids) == count, pids
                return pids
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the log and metrics directory are removed after a clean exit (kept otherwise)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        if self.proc.returncode == 0:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.log.unlink(missing_ok=True)
        return self.proc.returncode


@pytest.fixture
def gateway_factory() -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def make(args: Sequence[str], env: dict[str, str] | None = None) -> GatewayProcess:
        gw = GatewayProcess(args, env).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        with contextlib.suppress(Exception):
            gw.stop()


@pytest.fixture(scope="module")
def live_gateway(broker: str) -> Iterator[GatewayProcess]:
    """One gateway (2 workers) for a test module, on uuid-named topics of the session broker."""
    suffix = uuid.uuid4().hex[:10]
    gw = GatewayProcess(
        [
            "--brokers",
            broker,
            "--workers",
            "2",
            "--visit-topic",
            f"visit-{suffix}",
            "--activity-topic",
            f"activity-{suffix}",
            "--partitions",
            "4",
            "--max-body-bytes",
            str(2 * 1024 * 1024),
            "--produce-timeout-ms",
            "5000",
        ]
    ).start()
    gw.visit_topic = f"visit-{suffix}"  # type: ignore[attr-defined]
    gw.activity_topic = f"activity-{suffix}"  # type: ignore[attr-defined]
    yield gw
    assert gw.stop() == 0


async def consume_all(brokers: str, topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
    """Every record of ``topic`` from the beginning, once ``expected`` arrived (or the deadline)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + 10
        while not partitions and time.monotonic() < deadline:
            # A new topic may not be in the consumer's metadata yet (seen on Kafka); aiokafka has no public
            # call that refreshes it (topics() fetches without storing), so use the client's own.
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10000)
            for records in batch.values():
                out.extend(records)
        # One more short poll: anything beyond `expected` is a duplicate or an error.
        for records in (await consumer.getmany(timeout_ms=300)).values():
            out.extend(records)
        return out
    finally:
        await consumer.stop()


@pytest.fixture
async def consume(broker: str) -> AsyncIterator[Callable[..., Any]]:
    async def run(topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
        return await consume_all(broker, topic, expected, timeout)

    yield run
