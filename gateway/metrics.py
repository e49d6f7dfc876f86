"""The gateway's Prometheus metrics (one :class:`GatewayMetrics` per worker process).

Each worker records into its own registry; a :class:`~footfall.metrics.SnapshotWriter`
dumps it every second into the metrics directory the main process created, and
``/metrics`` on any worker merges them (:func:`footfall.metrics.collect`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from footfall.metrics import LATENCY_BUCKETS, SIZE_BUCKETS, Registry
from gateway.errors import REJECTION_CODES

__all__ = ["METRIC_NAMES", "GatewayMetrics"]

_PREFIX: Final = "footfall_gateway_"
_BYTE_BUCKETS: Final = tuple(b * 16 for b in SIZE_BUCKETS)

METRIC_NAMES: Final = (
    "footfall_gateway_requests_total",
    "footfall_gateway_request_duration_seconds",
    "footfall_gateway_reports_accepted_total",
    "footfall_gateway_reports_rejected_total",
    "footfall_gateway_produce_ack_seconds",
    "footfall_gateway_batch_records",
    "footfall_gateway_batch_bytes",
    "footfall_gateway_inflight_bytes",
    "footfall_gateway_inflight_requests",
    "footfall_gateway_broker_errors_total",
    "footfall_gateway_producer_replacements_total",
    "footfall_gateway_ready",
    "footfall_gateway_workers",
)


class GatewayMetrics:
    """Counters, gauges and histograms of one worker; attribute per metric."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        r = self.registry
        self.requests = r.counter(
            _PREFIX + "requests_total", "HTTP requests answered, by route and status", ("route", "status")
        )
        self.request_seconds = r.histogram(
            _PREFIX + "request_duration_seconds",
            "Time from request received to answer, by route",
            ("route",),
            LATENCY_BUCKETS,
        )
        self.accepted = r.counter(
            _PREFIX + "reports_accepted_total", "Reports acknowledged by Kafka and answered 200", ("topic",)
        )
        self.rejected = r.counter(
            _PREFIX + "reports_rejected_total",
            "Requests with reports not accepted, by topic and reason",
            ("topic", "reason"),
        )
        self.ack_seconds = r.histogram(
            _PREFIX + "produce_ack_seconds",
            "Time from a batch's first record to the broker's ack (or failure)",
            ("topic",),
            LATENCY_BUCKETS,
        )
        self.batch_records = r.histogram(
            _PREFIX + "batch_records", "Records per produced batch (per partition)", ("topic",), SIZE_BUCKETS
        )
        self.batch_bytes = r.histogram(
            _PREFIX + "batch_bytes", "Bytes (keys+values+headers) per produced batch", ("topic",), _BYTE_BUCKETS
        )
        self.inflight_bytes = r.gauge(_PREFIX + "inflight_bytes", "Report bytes awaiting the broker's ack")
        self.inflight_requests = r.gauge(_PREFIX + "inflight_requests", "Requests awaiting the broker's ack")
        self.broker_errors = r.counter(
            _PREFIX + "broker_errors_total",
            "Failed batches, produce timeouts and failed broker probes, by kind",
            ("kind",),
        )
        self.producer_replacements = r.counter(
            _PREFIX + "producer_replacements_total",
            "Kafka producers replaced because their sender task died",
        )
        # Gauges add up over the live workers: ready == workers means every worker would answer 200.
        self.ready = r.gauge(
            _PREFIX + "ready", "Workers ready (broker reachable, sender alive, not saturated); each ready worker adds 1"
        )
        self.workers = r.gauge(_PREFIX + "workers", "Worker processes running; each worker adds 1")
        self.workers.set(1)

    def declare(self, topics: Sequence[str], routes: Sequence[str]) -> None:
        """Create the known label sets now, so each series exists from zero (a rate() needs a first sample)."""
        for topic in topics:
            self.accepted.labels(topic)
            self.ack_seconds.labels(topic)
            self.batch_records.labels(topic)
            self.batch_bytes.labels(topic)
            for code in REJECTION_CODES:
                self.rejected.labels(topic, code)
        for route in routes:
            self.requests.labels(route, "200")
            self.request_seconds.labels(route)
        for kind in ("probe", "produce_timeout", "sender_died"):
            self.broker_errors.labels(kind)
