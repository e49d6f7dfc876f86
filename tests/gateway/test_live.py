"""The live gateway (``python -m gateway``, 2 workers) against the real embedded broker, over real HTTP."""

from __future__ import annotations

import asyncio
import gzip
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from footfall.kafka import HEADER_RECEIVED_MS, HEADER_REQUEST_ID, HEADER_SCHEMA, HEADER_TYPE, partition_for
from footfall.promtext import samples, total
from footfall.reports import encode_report
from tests.faults.harness import children, logged_port, wait_for
from tests.gateway.conftest import JSON_GZIP, ROOT, GatewayProcess, original_body
from tests.gateway.test_body import gzip_bomb

pytestmark = pytest.mark.integration


def wait_metric(gw: GatewayProcess, name: str, at_least: float, timeout: float = 10.0, **labels: str) -> str:
    """Poll /metrics until ``name`` reaches ``at_least`` (worker snapshots land every second)."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(gw.url + "/metrics").text
        if total(text, name, **labels) >= at_least or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


async def test_original_client_form_lands_in_kafka(live_gateway: GatewayProcess, consume: Any) -> None:
    gw = live_gateway
    sent: dict[bytes, Any] = {}
    async with httpx.AsyncClient(base_url=gw.url) as client:
        for seed, (kind, path) in enumerate([("visit", "/api/visit/v1"), ("activity", "/api/activity/v1/")] * 3):
            body, reports = original_body(kind, seed=seed)
            response = await client.post(path, content=body, headers=JSON_GZIP)
            assert response.status_code == 200, response.text
            assert response.json() == {"accepted": 12}
            for r in reports:
                sent[encode_report(r)] = (kind, r, response.headers["x-request-id"])
    for kind, topic in (("visit", gw.visit_topic), ("activity", gw.activity_topic)):  # type: ignore[attr-defined]
        records = await consume(topic, 36)
        assert len(records) == 36
        for rec in records:
            want_kind, report, request_id = sent[rec.value]
            assert want_kind == kind
            assert rec.key == str(report.userId).encode()
            assert rec.partition == partition_for(rec.key, 4)
            headers = dict(rec.headers)
            assert headers[HEADER_TYPE] == kind.encode()
            assert headers[HEADER_SCHEMA] == b"1"
            assert int(headers[HEADER_RECEIVED_MS]) == rec.timestamp
            assert abs(rec.timestamp - time.time() * 1000) < 120_000
            assert headers[HEADER_REQUEST_ID].decode() == request_id


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"[{", {"Content-Type": "application/json"}, 400),
        (gzip.compress(b"[1,2]")[:-3], JSON_GZIP, 400),
        (b"[]", {"Content-Type": "text/plain"}, 415),
        (b"[]", {"Content-Type": "application/json", "Content-Encoding": "br"}, 415),
        (b'[{"dataVer":1}]', {"Content-Type": "application/json"}, 422),
        (b" " * (3 * 1024 * 1024), {"Content-Type": "application/json"}, 413),
        (gzip.compress(b" " * (9 * 1024 * 1024)), JSON_GZIP, 413),
    ],
)
def test_client_errors_over_http(
    live_gateway: GatewayProcess, body: bytes, headers: dict[str, str], status: int
) -> None:
    response = httpx.post(live_gateway.url + "/api/visit/v1", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["message"]


def test_gzip_bomb_costs_a_few_mb(live_gateway: GatewayProcess) -> None:
    gw = live_gateway
    bomb = gzip_bomb(1024**3)
    body, _ = original_body()
    pids = gw.worker_pids(2)
    with httpx.Client(base_url=gw.url) as client:
        for _ in range(20):  # warm both workers
            assert client.post("/api/visit/v1", content=body, headers=JSON_GZIP).status_code == 200
        before = {pid: _rss(pid) for pid in pids}
        started = time.perf_counter()
        for _ in range(4):  # reaches both workers (keep-alive is per connection: new clients)
            response = httpx.post(gw.url + "/api/visit/v1", content=bomb, headers=JSON_GZIP)
            assert response.status_code == 413, response.text
        elapsed = (time.perf_counter() - started) / 4
        after = {pid: _rss(pid) for pid in pids}
    growth = max(after[p] - before[p] for p in pids)
    assert growth < 12 * 1024 * 1024, (before, after)
    assert elapsed < 1.0, elapsed


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) * 1024  # type: ignore[index]


async def test_concurrent_requests_share_batches(live_gateway: GatewayProcess) -> None:
    gw = live_gateway
    topic = gw.activity_topic  # type: ignore[attr-defined]
    before = httpx.get(gw.url + "/metrics").text
    n_before = total(before, "footfall_gateway_batch_records_count", topic=topic)
    r_before = total(before, "footfall_gateway_batch_records_sum", topic=topic)
    requests = 200
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=gw.url, limits=limits) as client:

        async def one(seed: int) -> int:
            body, _ = original_body("activity", seed=1000 + seed)
            return (await client.post("/api/activity/v1", content=body, headers=JSON_GZIP)).status_code

        statuses = await asyncio.gather(*(one(i) for i in range(requests)))
    assert statuses == [200] * requests
    text = wait_metric(gw, "footfall_gateway_batch_records_sum", r_before + requests * 12, topic=topic)
    batches = total(text, "footfall_gateway_batch_records_count", topic=topic) - n_before
    records = total(text, "footfall_gateway_batch_records_sum", topic=topic) - r_before
    assert records == requests * 12
    # Unshared, each request would make >= 1 batch (one user: one partition). The deterministic
    # version of this check is test_producer.py::test_requests_in_one_tick_share_one_batch_per_partition.
    assert batches < requests * 0.9, (batches, records)


def test_health_readiness_metrics(live_gateway: GatewayProcess) -> None:
    gw = live_gateway
    assert httpx.get(gw.url + "/healthz").json()["status"] == "ok"
    ready = httpx.get(gw.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    text = wait_metric(gw, "footfall_gateway_ready", 2)  # summed over the 2 workers
    for name in ("footfall_gateway_requests_total", "footfall_gateway_inflight_bytes"):
        assert f"# TYPE {name}" in text
    assert "each ready worker adds 1" in text  # the help says what the sum means
    assert total(text, "footfall_gateway_workers") == 2
    assert ready.json()["sender_alive"] is True


def test_errors_name_the_url_and_carry_a_request_id(live_gateway: GatewayProcess) -> None:
    root = httpx.get(live_gateway.url + "/")
    assert root.status_code == 404
    assert root.headers["x-request-id"] == root.json()["request_id"]
    assert "GET /:" in root.json()["message"] and "/api/visit/v1" in root.json()["message"]

    wrong = httpx.get(live_gateway.url + "/api/visit/v1", headers={"X-Request-ID": "mine-1"})
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.headers["x-request-id"] == "mine-1"
    assert wrong.json()["message"] == "GET is not allowed on /api/visit/v1; use POST"

    post = httpx.post(live_gateway.url + "/metrics")
    assert post.status_code == 405 and post.headers["allow"] == "GET" and post.headers["x-request-id"]


def test_metrics_have_zero_series_process_metrics_and_build_info(live_gateway: GatewayProcess) -> None:
    from footfall import __version__

    gw = live_gateway
    text = wait_metric(gw, "footfall_gateway_workers", 2)
    topic = gw.activity_topic  # type: ignore[attr-defined]
    # Known label sets exist from zero, before any request used them.
    for line in (
        f'footfall_gateway_reports_rejected_total{{topic="{topic}",reason="produce_timeout"}} ',
        f'footfall_gateway_reports_rejected_total{{topic="{topic}",reason="invalid_reports"}} ',
        'footfall_gateway_broker_errors_total{kind="sender_died"} ',
        'footfall_gateway_requests_total{route="/api/activity/v1",status="200"} ',
    ):
        assert line in text, line
    assert f'footfall_build_info{{version="{__version__}"' in text
    pids = {s.labels["pid"] for s in samples(text) if s.name == "process_resident_memory_bytes"}
    assert len(pids) == 2, pids  # one series per worker


def test_api_key_and_cors_over_http(broker: str, gateway_factory: Any) -> None:
    gw = gateway_factory(
        ["--brokers", broker, "--workers", "1", "--api-key", "s3cret", "--cors-origin", "https://app.example"]
    )
    body, _ = original_body()
    assert httpx.post(gw.url + "/api/visit/v1", content=body, headers=JSON_GZIP).status_code == 401
    ok = httpx.post(gw.url + "/api/visit/v1", content=body, headers={**JSON_GZIP, "Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    pre = httpx.options(
        gw.url + "/api/activity/v1/", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://app.example"
    assert gw.stop() == 0


async def test_graceful_shutdown_answers_in_flight_requests(broker: str, gateway_factory: Any) -> None:
    gw = gateway_factory(["--brokers", broker, "--workers", "1", "--linger-ms", "300", "--shutdown-timeout", "10"])
    body, _ = original_body()
    async with httpx.AsyncClient(base_url=gw.url) as client:
        posts = [asyncio.ensure_future(client.post("/api/visit/v1", content=body, headers=JSON_GZIP)) for _ in range(8)]
        await asyncio.sleep(0.1)  # requests are now waiting on a lingering batch
        gw.proc.send_signal(signal.SIGTERM)
        responses = await asyncio.gather(*posts)
    assert [r.status_code for r in responses] == [200] * 8
    assert gw.proc.wait(15) == 0


def test_idempotence_on_is_refused_on_the_embedded_broker(broker: str) -> None:
    gw = GatewayProcess(["--brokers", broker, "--idempotence", "on"])
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *gw.args], env=gw.env, capture_output=True, text=True, timeout=60, check=False
    )
    gw.metrics_dir.rmdir()  # never started: nothing in it
    assert proc.returncode == 2
    assert "--idempotence" in proc.stderr.strip().splitlines()[-1]


def test_unknown_fields_and_trailing_slash(live_gateway: GatewayProcess) -> None:
    _, reports = original_body()
    items = [{**msgspec.to_builtins(r), "battery": 0.5} for r in reports]
    response = httpx.post(
        live_gateway.url + "/api/visit/v1/",
        content=msgspec.json.encode(items),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200


def test_port_0_listens_on_a_free_port_and_logs_which(broker: str, tmp_path: Path) -> None:
    """Sanic reads port 0 as "no port" and listens on 8000; the gateway binds it itself."""
    log = tmp_path / "gateway.log"
    argv = [sys.executable, "-m", "gateway", "--brokers", broker, "--host", "127.0.0.1", "--port", "0"]
    argv += ["--workers", "2"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        port = logged_port(log, proc, "gateway starting")
        assert port not in (0, 8000)
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, 30, "the gateway")
        pids = {httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()["pid"] for _ in range(20)}
        assert pids <= set(children(proc.pid)), "another process answers on the logged port"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
