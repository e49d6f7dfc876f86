"""Micro-benchmarks of the gateway's hot path (pytest-benchmark; not part of the default test run).

Each step benchmark calls the function of ``gateway.ingest`` the gateway runs for that step
(no copies of its loops), and ``test_ingest_handler`` runs the whole handler.

Run: ``PYTHONPATH=. pytest perf/bench_gateway.py --benchmark-enable -p no:cacheprovider``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
from typing import Any

import msgspec
import pytest
from aiokafka.producer.message_accumulator import BatchBuilder  # type: ignore[import-untyped]

from footfall.generator import DEFAULT_START_DATE, day_start_ms, original_visits, user_id
from footfall.kafka import partition_for
from footfall.reports import ReportType, encode_report
from gateway.body import BodyLimits, decompress
from gateway.ingest import check_content, decode, encode_records, kafka_headers

LIMITS = BodyLimits(max_body_bytes=2 << 20, max_decompressed_bytes=4 << 20, max_expansion_ratio=200)
HEADERS = [
    ("ff-type", b"visit"),
    ("ff-schema", b"1"),
    ("ff-received-ms", b"1700000000000"),
    ("ff-request-id", b"0a1b2c3d-1f"),
]


def _request() -> tuple[bytes, list[Any]]:
    rng = random.Random(1)
    visits = original_visits(rng, user_id(rng), day_start_ms(DEFAULT_START_DATE, 0))
    return gzip.compress(msgspec.json.encode(visits)), visits


@pytest.mark.benchmark(group="gateway")
def test_gunzip_decode_validate(benchmark: Any) -> None:
    """Steps 2 and 3: content checks, then gunzip, decode and validate 12 reports."""
    from sanic.compat import Header

    body, _ = _request()
    headers = Header({"content-type": "application/json", "content-encoding": "gzip"})

    def run() -> int:
        return len(decode(ReportType.VISIT, body, check_content(headers), LIMITS, 20))

    assert benchmark(run) == 12


@pytest.mark.benchmark(group="gateway")
def test_gunzip_only(benchmark: Any) -> None:
    body, _ = _request()
    benchmark(decompress, body, "gzip", LIMITS)


@pytest.mark.benchmark(group="gateway")
def test_reencode_with_keys(benchmark: Any) -> None:
    """Steps 4 and 5: re-encode 12 reports into keyed records, and their headers."""
    _, visits = _request()

    def run() -> int:
        kafka_headers(ReportType.VISIT, 1_700_000_000_000, "0a1b2c3d-1f")
        return len(encode_records(visits))

    assert benchmark(run) == 12


@pytest.mark.benchmark(group="gateway-response")
@pytest.mark.parametrize("kind", ["sanic", "gateway"])
def test_response_headers(benchmark: Any, kind: str) -> None:
    """Build a 200 with X-Request-ID and encode its header block, as Sanic does before sending."""
    from sanic.headers import format_http1_response
    from sanic.response import HTTPResponse

    from gateway.app import _json

    def run() -> bytes:
        headers = {"X-Request-ID": "0a1b2c3d-1f"}
        if kind == "sanic":
            response = HTTPResponse(b'{"accepted":12}', status=200, headers=headers, content_type="application/json")
        else:
            response = _json(b'{"accepted":12}', 200, headers)
        response.headers["content-length"] = 15
        response.headers["connection"] = "keep-alive"
        return format_http1_response(200, response.processed_headers)

    benchmark(run)


@pytest.mark.benchmark(group="gateway-handler")
def test_ingest_handler(benchmark: Any) -> None:
    """The whole handler for one 12-report request (producer acking at once) + header encoding."""
    from types import SimpleNamespace

    from sanic.compat import Header
    from sanic.headers import format_http1_response

    from gateway.app import _ingest, create_app
    from gateway.settings import GatewaySettings

    class _Instant:
        inflight_bytes = 0
        broker_reachable = True

        def __init__(self, done: asyncio.Future[None]) -> None:
            self.done = done

        async def submit(self, *args: Any) -> list[asyncio.Future[None]]:
            return [self.done]

    body, _ = _request()

    async def scenario() -> None:
        app = create_app(GatewaySettings(), name="bench_ingest")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        app.ctx.producer = _Instant(done)  # type: ignore[assignment]
        headers = Header({"content-type": "application/json", "content-encoding": "gzip", "host": "x"})
        request = SimpleNamespace(app=app, body=body, method="POST", path="/api/visit/v1", headers=headers)

        def run() -> int:
            coro = _ingest(request, ReportType.VISIT, "/api/visit/v1")  # type: ignore[arg-type]
            try:
                coro.send(None)
            except StopIteration as stop:
                response = stop.value
            response.headers["content-length"] = len(response.body)
            response.headers["connection"] = "keep-alive"
            format_http1_response(response.status, response.processed_headers)
            return int(response.status)

        assert benchmark(run) == 200

    asyncio.run(scenario())


@pytest.mark.benchmark(group="gateway")
def test_partition_once_per_request(benchmark: Any) -> None:
    key = str(_request()[1][0].userId).encode()
    benchmark(partition_for, key, 4)


@pytest.mark.benchmark(group="gateway")
def test_batch_append_12_records(benchmark: Any) -> None:
    _, visits = _request()
    records = [(str(v.userId).encode(), encode_report(v)) for v in visits]
    state = {"builder": BatchBuilder(512 * 1024, 0), "n": 0}

    def run() -> None:
        builder = state["builder"]
        for key, value in records:
            if builder.append(timestamp=1_700_000_000_000, key=key, value=value, headers=HEADERS) is None:
                builder = state["builder"] = BatchBuilder(512 * 1024, 0)
                builder.append(timestamp=1_700_000_000_000, key=key, value=value, headers=HEADERS)

    benchmark(run)


@pytest.mark.benchmark(group="gateway")
def test_submit_to_open_batch(benchmark: Any) -> None:
    """BatchingProducer.submit for one 12-report request, batches never sent (no broker)."""
    from gateway.batching import BatchingProducer
    from gateway.metrics import GatewayMetrics
    from gateway.producer import Record
    from gateway.settings import GatewaySettings

    _, visits = _request()
    records = [Record(str(v.userId).encode(), encode_report(v)) for v in visits]
    settings = GatewaySettings(max_inflight_bytes=1 << 60)

    class _Builderless:
        def create_batch(self) -> BatchBuilder:
            return BatchBuilder(512 * 1024, 0)

    async def scenario() -> None:
        producer = BatchingProducer(settings, GatewayMetrics(), idempotence=False)
        producer._producer = _Builderless()
        producer._partition_counts["visit"] = 4
        producer._submit = _no_submit  # type: ignore[method-assign,assignment]
        loop = asyncio.get_running_loop()

        def run() -> None:
            coro = producer.submit("visit", records, HEADERS, 1_700_000_000_000)
            with contextlib.suppress(StopIteration):
                coro.send(None)

        benchmark(run)
        del loop

    async def _no_submit(*args: Any) -> None:
        return None

    asyncio.run(scenario())
