"""The Sanic application: routes and request handling, built by :func:`create_app`.

Per request (``POST /api/{visit,activity}/v1[/]``) the numbered steps of :mod:`gateway.ingest`
run in order (API key, content checks, decode, re-encode, headers, produce, wait for the acks,
metrics and access log): 200 ``{"accepted": n}`` only if every batch was acknowledged, else the
error's status (503 with Retry-After when Kafka did not take the reports).

The producer is created in ``before_server_start`` (once per worker) and flushed and
stopped in ``after_server_stop``: :mod:`gateway.lifecycle`. A worker's state: :mod:`gateway.context`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import msgspec
from sanic import Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse

from footfall.metrics import collect
from footfall.reports import ReportType
from gateway.batching import BatchingProducer
from gateway.context import GatewayApp, GatewayContext, GatewayRequest, ProducerFactory
from gateway.errors import GatewayError, ReportValidationError
from gateway.ingest import (
    RouteMetrics,
    authenticate,
    check_content,
    decode,
    encode_records,
    kafka_headers,
    log_access,
    observe,
    produce,
    received_now_ms,
    wait_for_acks,
)
from gateway.lifecycle import after_stop, before_start, before_stop, start_watchdog
from gateway.openapi import API_ROUTES, ErrorBody
from gateway.settings import GatewaySettings

__all__ = ["APP_NAME", "create_app"]

log = logging.getLogger(__name__)

APP_NAME: Final = "footfall_gateway"
_JSON: Final = "application/json"
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_ENCODER: Final = msgspec.json.Encoder()
_CORS_HEADERS: Final = "Content-Type, Content-Encoding, Authorization, X-API-Key, X-Request-ID"
_ROUTES_HINT: Final = (
    "reports go to POST /api/visit/v1 or /api/activity/v1; GET /healthz, /readyz, /metrics, /openapi.json"
)


def _request_id(request: GatewayRequest, ctx: GatewayContext) -> str:
    given = request.headers.get("x-request-id")
    if given and _REQUEST_ID_RE.fullmatch(given):
        return str(given)
    return f"{ctx.id_prefix}{next(ctx.id_counter):x}"


class _Response(HTTPResponse):
    """An HTTPResponse whose headers encode ~5 us cheaper per response (measured, 4 headers).

    Sanic strips CR, LF and NUL from every header name and value with ``str.translate`` (CRLF
    injection). Ours hold none (the request id matched a strict pattern, the CORS origin is one
    configured), so names and values are only checked with ``str.isprintable`` (False for all three);
    any header that fails the check sends the response down Sanic's own path: the same bytes.
    """

    __slots__ = ()

    @property
    def processed_headers(self) -> Iterator[tuple[bytes, bytes]]:
        headers = self.headers
        if self.status >= 200 and self.status not in (204, 304):  # as sanic.helpers.has_message_body
            headers.setdefault("content-type", self.content_type)
        encoded = []
        for name, value in headers.items():
            text = f"{value}"
            if not (name.isprintable() and text.isprintable()):
                return super().processed_headers
            encoded.append((name.encode("ascii"), text.encode(errors="surrogateescape")))
        return iter(encoded)


def _json(body: bytes, status: int, headers: dict[str, str]) -> HTTPResponse:
    return _Response(body, status=status, headers=headers, content_type=_JSON)


def _error_response(exc: GatewayError, request_id: str, headers: dict[str, str], retry_after: str) -> HTTPResponse:
    errors = exc.errors if isinstance(exc, ReportValidationError) else None
    body = _ENCODER.encode(ErrorBody(error=exc.code, message=exc.message, request_id=request_id, errors=errors))
    if exc.status == 503:
        headers["Retry-After"] = retry_after
    return _json(body, exc.status, headers)


def _cors_headers(request: GatewayRequest, ctx: GatewayContext, headers: dict[str, str]) -> None:
    origin = request.headers.get("origin")
    if origin and (ctx.cors_any or origin in ctx.cors_origins):
        headers["Access-Control-Allow-Origin"] = "*" if ctx.cors_any else origin
        headers["Access-Control-Expose-Headers"] = "X-Request-ID, Retry-After"
        if not ctx.cors_any:
            headers["Vary"] = "Origin"


async def _ingest(request: GatewayRequest, report_type: ReportType, route: str) -> HTTPResponse:
    """One ingest request: the numbered steps of :mod:`gateway.ingest`, then the answer."""
    ctx = request.app.ctx
    started = time.perf_counter()
    request_id = _request_id(request, ctx)
    headers = {"X-Request-ID": request_id}
    if ctx.cors_origins:
        _cors_headers(request, ctx, headers)
    topic = ctx.settings.topic_for(report_type)
    route_metrics = ctx.route_metrics.get(route)
    if route_metrics is None:  # looked up once per route (the series exist from zero: GatewayMetrics.declare)
        route_metrics = ctx.route_metrics[route] = RouteMetrics(ctx.metrics, route, topic)
    try:
        if ctx.api_keys:
            authenticate(request.headers, ctx.api_keys)  # 1.
        coding = check_content(request.headers)  # 2.
        reports = decode(report_type, request.body, coding, ctx.limits, ctx.settings.max_errors)  # 3.
        received_ms = received_now_ms()
        records = encode_records(reports)  # 4.
        record_headers = kafka_headers(report_type, received_ms, request_id)  # 5.
        deliveries = await produce(ctx.producer, topic, records, record_headers, received_ms)  # 6.
        route_metrics.inflight.inc()
        try:
            await wait_for_acks(deliveries)  # 7.
        finally:
            route_metrics.inflight.dec()
        response = _json(b'{"accepted":%d}' % len(records), 200, headers)
        route_metrics.accepted.inc(len(records))
    except GatewayError as exc:
        response = _error_response(exc, request_id, headers, ctx.retry_after)
        ctx.metrics.rejected.labels(topic, exc.code).inc()
        level = logging.INFO if exc.status >= 500 else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, exc.message, extra={"request_id": request_id, "status": exc.status, "route": route})
    elapsed = time.perf_counter() - started
    observe(route_metrics, route, response.status, elapsed)  # 8.
    if ctx.settings.access_log:
        log_access(request_id, request.method, request.path, response.status, elapsed, len(request.body))
    return response


def _make_ingest_handler(report_type: ReportType, route: str) -> Callable[[GatewayRequest], Any]:
    async def handler(request: GatewayRequest) -> HTTPResponse:
        return await _ingest(request, report_type, route)

    handler.__name__ = f"post_{report_type.value}"
    return handler


def _make_preflight_handler(route: str) -> Callable[[GatewayRequest], Any]:
    async def preflight(request: GatewayRequest) -> HTTPResponse:
        ctx = request.app.ctx
        headers: dict[str, str] = {}
        _cors_headers(request, ctx, headers)
        if headers:
            headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
            headers["Access-Control-Max-Age"] = "600"
        ctx.metrics.requests.labels(route, "204").inc()
        return HTTPResponse(status=204, headers=headers)

    preflight.__name__ = f"preflight_{route.strip('/').replace('/', '_')}"
    return preflight


async def _healthz(request: GatewayRequest) -> HTTPResponse:
    return _json(_ENCODER.encode({"status": "ok", "pid": os.getpid()}), 200, {})


async def _readyz(request: GatewayRequest) -> HTTPResponse:
    ctx = request.app.ctx
    producer = ctx.producer
    starting = time.monotonic() - ctx.started_at < ctx.ready_grace
    ready = producer is not None and producer.ready() and not starting
    ctx.metrics.ready.set(1.0 if ready else 0.0)
    body = {
        "ready": ready,
        "starting": starting,
        "broker_reachable": producer is not None and producer.broker_reachable,
        "sender_alive": producer is not None and producer.sender_alive,
        "inflight_bytes": producer.inflight_bytes if producer is not None else 0,
        "max_inflight_bytes": ctx.settings.max_inflight_bytes,
        "pid": os.getpid(),
    }
    return _json(_ENCODER.encode(body), 200 if ready else 503, {})


async def _metrics(request: GatewayRequest) -> HTTPResponse:
    ctx = request.app.ctx
    text = collect(ctx.metrics_dir, ctx.metrics.registry)
    return HTTPResponse(text, status=200, content_type="text/plain; version=0.0.4; charset=utf-8")


async def _openapi(request: GatewayRequest) -> HTTPResponse:
    return _json(request.app.ctx.openapi, 200, {})


def _sanic_error(request: GatewayRequest, exc: Exception) -> HTTPResponse:
    """Sanic's own errors (404, 405, 413 from Content-Length, malformed HTTP, ...) and bugs, as JSON.

    Like every answer they carry X-Request-ID; a 405 keeps Sanic's ``Allow`` header.
    """
    ctx = request.app.ctx
    request_id = _request_id(request, ctx)
    headers = {"X-Request-ID": request_id}
    if isinstance(exc, SanicException):
        status = int(exc.status_code)
        code = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
        message = str(exc) or code
        headers.update({str(k): str(v) for k, v in (exc.headers or {}).items()})
        if status == 404:
            message = f"no route for {request.method} {request.path}: {_ROUTES_HINT}"
        elif status == 405:
            message = f"{request.method} is not allowed on {request.path}; use {headers.get('Allow', 'another method')}"
        elif status == 413:
            message = (
                f"body is over {ctx.settings.max_body_bytes} bytes as sent (--max-body-bytes): send smaller requests"
            )
    else:
        status, code, message = 500, "internal_error", "internal error (logged with the request id)"
        log.error("unhandled error", exc_info=exc, extra={"path": request.path, "request_id": request_id})
    if status == 503:
        headers["Retry-After"] = ctx.retry_after
    route = request.path if request.route is not None else "other"
    ctx.metrics.requests.labels(route, str(status)).inc()
    body = ErrorBody(error=code, message=message, request_id=request_id)
    return _json(_ENCODER.encode(body), status, headers)


def create_app(
    settings: GatewaySettings,
    *,
    idempotence: bool = False,
    producer_factory: ProducerFactory | None = None,
    name: str = APP_NAME,
    configure_logs: bool = False,
) -> GatewayApp:
    """Build the gateway app (called once per worker process).

    Args:
        settings: the process settings.
        idempotence: enable the idempotent producer (resolved by the main process from ``--idempotence``).
        producer_factory: makes the worker's producer; tests pass a fake, ``python -m gateway`` a
            :class:`~gateway.producer.ProducerClass` bound to ``idempotence``. Default: BatchingProducer.
        name: Sanic app name (unique per process).
        configure_logs: set up JSON logging in the worker (``python -m gateway`` does; tests do not).
    """
    ctx = GatewayContext(settings, producer_factory or functools.partial(BatchingProducer, idempotence=idempotence))
    ctx.configure_logs = configure_logs
    app: GatewayApp = Sanic(name, ctx=ctx, configure_logging=False)
    app.config.REQUEST_MAX_SIZE = settings.max_body_bytes
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = settings.shutdown_timeout
    app.config.ACCESS_LOG = False  # our own JSON access log (--access-log) replaces Sanic's
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.NOISY_EXCEPTIONS = False
    # Longer than a typical balancer's idle timeout (60 s), so the balancer closes first.
    app.config.KEEP_ALIVE_TIMEOUT = settings.keep_alive_timeout
    # With DeadlineHttpProtocol both count from a request's first byte: headers, then body + answer.
    app.config.REQUEST_TIMEOUT = settings.client_timeout
    app.config.RESPONSE_TIMEOUT = settings.client_timeout + -(-settings.produce_timeout_ms // 1000)
    app.config.USE_UVLOOP = True  # explicit: Sanic's default also picks uvloop when installed
    for report_type_value, path in API_ROUTES:
        report_type = ReportType(report_type_value)
        app.add_route(
            _make_ingest_handler(report_type, path),
            path,
            methods=["POST"],
            strict_slashes=False,
            name=f"post_{report_type.value}",
        )
        if settings.cors_origins:
            app.add_route(
                _make_preflight_handler(path),
                path,
                methods=["OPTIONS"],
                strict_slashes=False,
                name=f"preflight_{report_type.value}",
            )
    app.add_route(_healthz, "/healthz", methods=["GET"], name="healthz")
    app.add_route(_readyz, "/readyz", methods=["GET"], name="readyz")
    app.add_route(_metrics, "/metrics", methods=["GET"], name="metrics")
    app.add_route(_openapi, "/openapi.json", methods=["GET"], name="openapi")
    app.error_handler.add(Exception, _sanic_error)
    app.register_listener(before_start, "before_server_start")
    app.register_listener(before_stop, "before_server_stop")
    app.register_listener(after_stop, "after_server_stop")
    app.register_listener(start_watchdog, "main_process_ready")
    return app
