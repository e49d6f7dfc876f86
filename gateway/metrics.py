"""The gateway's Prometheus metrics (one :class:`GatewayMetrics` per worker process).

Each worker records into its own registry; a :class:`~footfall.metrics.SnapshotWriter`
dumps it every second into the metrics directory the main process created, and
``/metrics`` on any worker merges them (:func:`footfall.metrics.collect`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from footfall.metrics import LATENCY_BUCKETS, SIZE_BUCKETS, MetricSet, Registry, counter, gauge, histogram
from gateway.errors import REJECTION_CODES

__all__ = ["GatewayMetrics"]

_PREFIX: Final = "footfall_gateway_"
_BYTE_BUCKETS: Final = tuple(b * 16 for b in SIZE_BUCKETS)


class GatewayMetrics(MetricSet):
    """Counters, gauges and histograms of one worker; attribute per metric."""

    requests = counter(_PREFIX + "requests_total", "HTTP requests answered, by route and status", ("route", "status"))
    request_seconds = histogram(
        _PREFIX + "request_duration_seconds",
        "Time from request received to answer, by route",
        ("route",),
        LATENCY_BUCKETS,
    )
    accepted = counter(_PREFIX + "reports_accepted_total", "Reports acknowledged by Kafka and answered 200", ("topic",))
    rejected = counter(
        _PREFIX + "reports_rejected_total",
        "Requests with reports not accepted, by topic and reason",
        ("topic", "reason"),
    )
    ack_seconds = histogram(
        _PREFIX + "produce_ack_seconds",
        "Time from a batch's first record to the broker's ack (or failure)",
        ("topic",),
        LATENCY_BUCKETS,
    )
    batch_records = histogram(
        _PREFIX + "batch_records", "Records per produced batch (per partition)", ("topic",), SIZE_BUCKETS
    )
    batch_bytes = histogram(
        _PREFIX + "batch_bytes", "Bytes (keys+values+headers) per produced batch", ("topic",), _BYTE_BUCKETS
    )
    inflight_bytes = gauge(_PREFIX + "inflight_bytes", "Report bytes awaiting the broker's ack")
    inflight_requests = gauge(_PREFIX + "inflight_requests", "Requests awaiting the broker's ack")
    broker_errors = counter(
        _PREFIX + "broker_errors_total", "Failed batches, produce timeouts and failed broker probes, by kind", ("kind",)
    )
    producer_replacements = counter(
        _PREFIX + "producer_replacements_total",
        "Kafka producers replaced: their sender task died, or Kafka refused their sequence numbers",
    )
    # Gauges add up over the live workers: ready == workers means every worker would answer 200.
    ready = gauge(
        _PREFIX + "ready", "Workers ready (broker reachable, sender alive, not saturated); each ready worker adds 1"
    )
    workers = gauge(_PREFIX + "workers", "Worker processes running; each worker adds 1")

    def __init__(self, registry: Registry | None = None) -> None:
        super().__init__(registry)
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
