"""The HTTP layer over a fake producer (no broker): every status code, headers, CORS, auth, docs."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import msgspec
import pytest
from sanic_testing import TestManager

from footfall.kafka import HEADER_RECEIVED_MS, HEADER_REQUEST_ID, HEADER_SCHEMA, HEADER_TYPE
from footfall.kafka import partition_for as _partition_for  # noqa: F401 - imported for parity with integration
from footfall.reports import encode_report
from tests.gateway.conftest import JSON_GZIP, original_body


async def post(app: Any, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    TestManager(app)
    _, response = await app.asgi_client.post(path, content=body, headers=headers if headers is not None else JSON_GZIP)
    return response


@pytest.mark.parametrize("path", ["/api/visit/v1", "/api/visit/v1/", "/api/activity/v1", "/api/activity/v1/"])
async def test_original_client_form_is_accepted(fake_app: Any, path: str) -> None:
    app, producer = fake_app()
    kind = "visit" if "visit" in path else "activity"
    body, reports = original_body(kind)
    response = await post(app, path, body)
    assert response.status == 200, response.text
    assert response.json == {"accepted": 12}
    assert response.headers["content-type"] == "application/json"
    (sub,) = producer.submissions
    assert sub.topic == kind
    assert [r.value for r in sub.records] == [encode_report(r) for r in reports]
    assert {r.key for r in sub.records} == {str(reports[0].userId).encode()}
    headers = dict(sub.headers)
    assert headers[HEADER_TYPE] == kind.encode()
    assert headers[HEADER_SCHEMA] == b"1"
    assert int(headers[HEADER_RECEIVED_MS]) == sub.timestamp_ms
    assert headers[HEADER_REQUEST_ID].decode() == response.headers["x-request-id"]


async def test_identity_and_deflate_encodings(fake_app: Any) -> None:
    app, producer = fake_app()
    body, _ = original_body()
    plain = gzip.decompress(body)
    for headers, data in [
        ({"Content-Type": "application/json"}, plain),
        ({"Content-Type": "application/json; charset=utf-8", "Content-Encoding": "identity"}, plain),
        ({"Content-Type": "application/json", "Content-Encoding": "deflate"}, zlib.compress(plain)),
        ({"Content-Type": "application/json", "Content-Encoding": "deflate"}, zlib.compress(plain)[2:-4]),  # raw
    ]:
        response = await post(app, "/api/visit/v1", data, headers)
        assert response.status == 200, (headers, response.text)
    assert len(producer.submissions) == 4


async def test_unknown_fields_are_dropped_from_the_record(fake_app: Any) -> None:
    app, producer = fake_app()
    _, reports = original_body()
    items = [{**msgspec.to_builtins(r), "extra": {"x": [1, 2]}} for r in reports]
    response = await post(app, "/api/visit/v1", gzip.compress(msgspec.json.encode(items)))
    assert response.status == 200
    assert producer.submissions[0].records[0].value == encode_report(reports[0])


async def test_request_id_is_taken_from_the_client_when_sane(fake_app: Any) -> None:
    app, producer = fake_app()
    body, _ = original_body()
    response = await post(app, "/api/visit/v1", body, {**JSON_GZIP, "X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    response = await post(app, "/api/visit/v1", body, {**JSON_GZIP, "X-Request-ID": "bad id;" * 50})
    assert response.headers["x-request-id"] != "bad id"
    assert dict(producer.submissions[1].headers)[HEADER_REQUEST_ID].decode() == response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        (b"[{", {"Content-Type": "application/json"}, 400, "bad_request"),
        (b"[NaN]", {"Content-Type": "application/json"}, 400, "bad_request"),
        (b"\x1f\x8b\x08garbage", JSON_GZIP, 400, "bad_request"),
        (gzip.compress(b"[1,2,3]")[:-6], JSON_GZIP, 400, "bad_request"),
        (b"[]", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b"[]", {}, 415, "unsupported_media_type"),
        (b"[]", {"Content-Type": "application/json", "Content-Encoding": "br"}, 415, "unsupported_media_type"),
        (b"[]", {"Content-Type": "application/json", "Content-Encoding": "gzip, gzip"}, 415, "unsupported_media_type"),
        (b"[]", {"Content-Type": "application/json"}, 422, "invalid_reports"),
        (b"{}", {"Content-Type": "application/json"}, 422, "invalid_reports"),
        (b'[{"dataVer": "1"}]', {"Content-Type": "application/json"}, 422, "invalid_reports"),
        (b"x" * 70_000, {"Content-Type": "application/json"}, 413, "payload_too_large"),
        (gzip.compress(b" " * 300_000), JSON_GZIP, 413, "payload_too_large"),
    ],
)
async def test_client_errors(fake_app: Any, body: bytes, headers: dict[str, str], status: int, error: str) -> None:
    app, producer = fake_app()
    response = await post(app, "/api/visit/v1", body, headers)
    assert response.status == status, response.text
    assert response.json["error"] == error
    assert response.json["message"]
    assert not producer.submissions


async def test_422_lists_index_field_message(fake_app: Any) -> None:
    app, _ = fake_app(max_errors=2)
    _, reports = original_body()
    items: list[Any] = [msgspec.to_builtins(r) for r in reports]
    items[1]["poiId"] = "x"
    items[3]["latitude"] = 1000
    items[5]["exitTime"] = 0
    items.append(7)
    response = await post(app, "/api/visit/v1", gzip.compress(msgspec.json.encode(items)))
    assert response.status == 422
    body = response.json
    assert body["errors"] == [
        {"index": 1, "field": "poiId", "message": "Expected `int`, got `str`"},
        {"index": 3, "field": "latitude", "message": "Expected `float` <= 90.0"},
    ]
    assert body["message"].startswith("4 of 13 reports are invalid")


async def test_post_init_rule_names_its_field(fake_app: Any) -> None:
    app, _ = fake_app()
    _, reports = original_body()
    item = msgspec.to_builtins(reports[0])
    item["exitTime"] = item["enterTime"] - 1
    response = await post(app, "/api/visit/v1", msgspec.json.encode([item]), {"Content-Type": "application/json"})
    assert response.status == 422
    assert response.json["errors"][0]["field"] == "exitTime"


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("saturated", "saturated"),
        ("down", "broker_unreachable"),
        ("fail", "produce_failed"),
        ("hang", "produce_timeout"),
    ],
)
async def test_503_with_retry_after(fake_app: Any, mode: str, error: str) -> None:
    app, producer = fake_app(mode, retry_after=3)
    body, _ = original_body()
    response = await post(app, "/api/visit/v1", body)
    assert response.status == 503, response.text
    assert response.headers["retry-after"] == "3"
    assert response.json["error"] == error
    if mode == "hang":
        assert producer.timeouts == 1


async def test_api_keys(fake_app: Any) -> None:
    app, producer = fake_app(api_keys=["k1", "k2"])
    body, _ = original_body()
    assert (await post(app, "/api/visit/v1", body)).status == 401
    assert (await post(app, "/api/visit/v1", body, {**JSON_GZIP, "X-API-Key": "nope"})).status == 401
    assert (await post(app, "/api/visit/v1", body, {**JSON_GZIP, "Authorization": "Bearer k3"})).status == 401
    assert (await post(app, "/api/visit/v1", body, {**JSON_GZIP, "X-API-Key": "k2"})).status == 200
    assert (await post(app, "/api/visit/v1", body, {**JSON_GZIP, "Authorization": "Bearer k1"})).status == 200
    assert len(producer.submissions) == 2


async def test_cors_preflight_and_headers(fake_app: Any) -> None:
    app, _ = fake_app(cors_origins=["https://app.example"])
    TestManager(app)
    _, response = await app.asgi_client.options(
        "/api/visit/v1",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,content-encoding",
        },
    )
    assert response.status == 204
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "Content-Encoding" in response.headers["access-control-allow-headers"]
    body, _ = original_body()
    response = await post(app, "/api/visit/v1/", body, {**JSON_GZIP, "Origin": "https://app.example"})
    assert response.status == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    response = await post(app, "/api/visit/v1/", body, {**JSON_GZIP, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_cors_off_by_default(fake_app: Any) -> None:
    app, _ = fake_app()
    body, _ = original_body()
    response = await post(app, "/api/visit/v1", body, {**JSON_GZIP, "Origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_health_ready_metrics_openapi(fake_app: Any) -> None:
    app, _ = fake_app()
    TestManager(app)
    body, _ = original_body()
    _, response = await app.asgi_client.get("/healthz")
    assert response.status == 200
    _, response = await app.asgi_client.get("/readyz")
    assert response.status == 200 and response.json["ready"] is True
    await post(app, "/api/visit/v1", body)
    await post(app, "/api/visit/v1", b"[", {"Content-Type": "application/json"})
    _, response = await app.asgi_client.get("/metrics")
    text = response.text
    assert 'footfall_gateway_requests_total{route="/api/visit/v1",status="200"} 1' in text
    assert 'footfall_gateway_requests_total{route="/api/visit/v1",status="400"} 1' in text
    assert 'footfall_gateway_reports_accepted_total{topic="visit"} 12' in text
    assert "footfall_gateway_request_duration_seconds_bucket" in text
    _, response = await app.asgi_client.get("/openapi.json")
    doc = response.json
    post_visit = doc["paths"]["/api/visit/v1"]["post"]
    assert set(post_visit["responses"]) == {"200", "400", "401", "413", "415", "422", "503"}
    assert "Visit" in doc["components"]["schemas"]


async def test_not_ready_while_broker_down(fake_app: Any) -> None:
    app, _ = fake_app("down")
    TestManager(app)
    _, response = await app.asgi_client.get("/readyz")
    assert response.status == 503
    assert response.json["broker_reachable"] is False


async def test_unknown_route_and_method_are_json(fake_app: Any) -> None:
    app, _ = fake_app()
    TestManager(app)
    _, response = await app.asgi_client.get("/api/visit/v1")
    assert response.status == 405
    assert response.json["error"]
    _, response = await app.asgi_client.get("/nope")
    assert response.status == 404
    assert response.json["error"] == "not_found"


async def test_access_log_lines_carry_the_request_id(fake_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    app, _ = fake_app(access_log=True)
    body, _ = original_body()
    with caplog.at_level("INFO", logger="gateway.access"):
        response = await post(app, "/api/visit/v1", body, {**JSON_GZIP, "X-Request-ID": "rid-42"})
    assert response.status == 200
    (line,) = [r for r in caplog.records if r.name == "gateway.access"]
    assert line.request_id == "rid-42"  # type: ignore[attr-defined]
    assert line.status == 200  # type: ignore[attr-defined]


async def test_503_lines_carry_the_request_id(fake_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    app, _ = fake_app("saturated")
    body, _ = original_body()
    with caplog.at_level("INFO", logger="gateway.app"):
        await post(app, "/api/visit/v1", body, {**JSON_GZIP, "X-Request-ID": "rid-43"})
    assert any(getattr(r, "request_id", None) == "rid-43" and r.status == 503 for r in caplog.records)  # type: ignore[attr-defined]


async def test_worker_survives_a_broker_down_at_start(fake_app: Any) -> None:
    import asyncio
    import time

    from footfall.errors import BrokerUnavailableError
    from gateway.lifecycle import after_stop, before_start

    app, producer = fake_app()
    attempts = []

    async def flaky_start() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise BrokerUnavailableError("down at start")
        producer.started = True

    producer.start = flaky_start  # type: ignore[method-assign]
    await before_start(app)
    assert app.ctx.producer is None  # serving 503 / not ready meanwhile, not crashed
    deadline = time.monotonic() + 5
    while app.ctx.producer is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert app.ctx.producer is producer and len(attempts) == 2
    await after_stop(app)
    assert producer.stopped
