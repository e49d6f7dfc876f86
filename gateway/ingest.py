"""The steps of one ingest request (``POST /api/{visit,activity}/v1``), one function each, in order.

``gateway.app`` runs them for every request; the tests and ``perf/bench_gateway.py`` call the
same functions, so what is measured is what serves.

1. :func:`authenticate`: the API key, when keys are configured (401);
2. :func:`check_content`: Content-Type (415) and Content-Encoding (415);
3. :func:`decode`: body size as sent (413; Sanic refused bodies over the limit from Content-Length
   already), bounded decompression (413/400), decode and validate (400/422) — all or nothing;
4. :func:`encode_records`: re-encode every report compactly (unknown fields dropped), keyed by userId;
5. :func:`kafka_headers`: the record headers (type, schema, receive time, request id);
6. :func:`produce`: append the records to the per-partition batches (503 at once when the worker's
   in-flight cap is reached, the broker is known to be down, or there is no producer);
7. :func:`wait_for_acks`: await the acks of the batches holding the records (acks=all), each
   settled within ``--produce-timeout-ms``: any failure is a 503;
8. :func:`observe` and :func:`log_access`: the request's metrics and its access-log line.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from collections.abc import Sequence
from typing import Final

import msgspec
from sanic.compat import Header

from footfall.kafka import HEADER_RECEIVED_MS, HEADER_REQUEST_ID, HEADER_SCHEMA, HEADER_TYPE
from footfall.reports import SCHEMA_VERSION, Activity, Report, ReportType, Visit
from gateway.body import BodyLimits, check_content_type, decode_body, decompress, parse_content_encoding
from gateway.errors import UnauthorizedError, UnavailableError, produce_failure
from gateway.metrics import GatewayMetrics
from gateway.producer import Delivery, Headers, Record, ReportProducer

__all__ = [
    "RouteMetrics",
    "authenticate",
    "check_content",
    "decode",
    "encode_records",
    "kafka_headers",
    "log_access",
    "observe",
    "produce",
    "received_now_ms",
    "wait_for_acks",
]

access_log = logging.getLogger("gateway.access")

_ENCODER: Final = msgspec.json.Encoder()
_SCHEMA_BYTES: Final = str(SCHEMA_VERSION).encode()


def authenticate(headers: Header, api_keys: Sequence[bytes]) -> None:
    """Step 1: accept ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` if it is one of ``api_keys``.

    Raises:
        UnauthorizedError: no key, or not a valid one.
    """
    auth = headers.get("authorization")
    given = auth[7:].strip() if auth and auth[:7].lower() == "bearer " else headers.get("x-api-key")
    if not given:
        raise UnauthorizedError("an API key is required: send Authorization: Bearer KEY or X-API-Key: KEY")
    raw = given.encode(errors="replace")
    # Compare against every key (constant time per key) so timing does not tell which one is close.
    if not any([hmac.compare_digest(raw, key) for key in api_keys]):  # noqa: C419
        raise UnauthorizedError("the API key is not valid")


def check_content(headers: Header) -> str:
    """Step 2: check Content-Type and Content-Encoding; return the coding (``gzip``, ``deflate``, ``identity``).

    Raises:
        UnsupportedMediaError: a type or coding the gateway does not take.
    """
    check_content_type(headers.get("content-type"))
    return parse_content_encoding(headers.get("content-encoding"))


def decode(
    report_type: ReportType, body: bytes, coding: str, limits: BodyLimits, max_errors: int
) -> list[Visit] | list[Activity]:
    """Step 3: decompress within ``limits``, then decode and validate every report (all or nothing).

    Raises:
        PayloadTooLargeError, BadRequestError, ReportValidationError: see :mod:`gateway.body`.
    """
    return decode_body(report_type, decompress(body, coding, limits), max_errors)


def encode_records(reports: Sequence[Report]) -> list[Record]:
    """Step 4: one Kafka record per report: key = userId, value = the compact re-encoding.

    One ``str()`` per run of equal ids. ``UUID.__eq__`` and ``Record.__new__`` are Python functions:
    compare the ids' ints (a slot) and build the named tuples with ``tuple.__new__`` (C), ~3 us less
    per 12-report request.
    """
    encode = _ENCODER.encode
    new_record = tuple.__new__
    records: list[Record] = []
    last_uid = -1
    key = b""
    for report in reports:
        uid = report.userId
        if uid.int != last_uid:
            key = str(uid).encode()
            last_uid = uid.int
        records.append(new_record(Record, (key, encode(report))))
    return records


def kafka_headers(report_type: ReportType, received_ms: int, request_id: str) -> Headers:
    """Step 5: the headers every record of the request carries (see ``footfall.kafka``)."""
    return [
        (HEADER_TYPE, report_type.value.encode()),
        (HEADER_SCHEMA, _SCHEMA_BYTES),
        (HEADER_RECEIVED_MS, str(received_ms).encode()),
        (HEADER_REQUEST_ID, request_id.encode()),
    ]


async def produce(
    producer: ReportProducer | None, topic: str, records: Sequence[Record], headers: Headers, received_ms: int
) -> list[Delivery]:
    """Step 6: queue every record of the request with the producer, or none.

    Raises:
        UnavailableError: no producer (starting or stopping), saturated, or the broker is down.
    """
    if producer is None:
        raise UnavailableError("the gateway is starting or stopping")
    return await producer.submit(topic, records, headers, received_ms)


async def wait_for_acks(deliveries: Sequence[Delivery]) -> None:
    """Step 7: return once every delivery resolved to an ack.

    Deliveries resolve on ack, failure or their batch's deadline (``--produce-timeout-ms``). A
    cancelled request (client gone) must not cancel the batch shared with others: it waits on a
    future of its own, settled from the batch's by a callback (``asyncio.shield``'s job, ~1 us cheaper).

    Raises:
        GatewayError: the 503 of the first delivery that failed (``gateway.errors.produce_failure``).
    """
    for delivery in deliveries:
        if delivery.done():
            error = delivery.result()
        else:
            waiter: Delivery = asyncio.get_running_loop().create_future()
            delivery.add_done_callback(functools.partial(_forward, waiter))
            error = await waiter
        if error is not None:
            raise produce_failure(error)


def _forward(waiter: Delivery, delivery: Delivery) -> None:
    """Settle a request's ``waiter`` like its batch's ``delivery`` (unless the request is gone)."""
    if waiter.done():
        return
    if delivery.cancelled():
        waiter.cancel()
    elif (exc := delivery.exception()) is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(delivery.result())


class RouteMetrics:
    """One ingest route's metric children, looked up once instead of by labels on every request."""

    __slots__ = ("accepted", "inflight", "ok", "requests", "seconds")

    def __init__(self, metrics: GatewayMetrics, route: str, topic: str) -> None:
        self.requests = metrics.requests
        self.ok = metrics.requests.labels(route, "200")
        self.seconds = metrics.request_seconds.labels(route)
        self.accepted = metrics.accepted.labels(topic)
        self.inflight = metrics.inflight_requests.labels()


def observe(route_metrics: RouteMetrics, route: str, status: int, elapsed: float) -> None:
    """Step 8: count the answer by status and observe its duration."""
    if status == 200:
        route_metrics.ok.inc()
    else:
        route_metrics.requests.labels(route, str(status)).inc()
    route_metrics.seconds.observe(elapsed)


def log_access(request_id: str, method: str, path: str, status: int, elapsed: float, nbytes: int) -> None:
    """Step 8 (``--access-log``): one JSON line per request."""
    access_log.info(
        "request",
        extra={
            "request_id": request_id,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "bytes": nbytes,
        },
    )


def received_now_ms() -> int:
    """The gateway's receive time of a request, epoch milliseconds (the ``ff-received-ms`` header)."""
    return time.time_ns() // 1_000_000
