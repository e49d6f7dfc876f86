"""A worker's state (``app.ctx``) and the app's types: what the routes and the lifecycle share.

Built once per worker from the settings (limits, keys, CORS, the OpenAPI document, request ids);
the producer and the snapshot writer are filled in by :mod:`gateway.lifecycle` when the server starts.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Final

import msgspec
from sanic import Request, Sanic
from sanic.config import Config

from footfall.metrics import SnapshotWriter
from gateway.body import BodyLimits
from gateway.ingest import RouteMetrics
from gateway.metrics import GatewayMetrics
from gateway.openapi import API_ROUTES, build_openapi
from gateway.producer import ReportProducer
from gateway.settings import GatewaySettings

__all__ = ["GatewayApp", "GatewayContext", "GatewayRequest", "ProducerFactory"]

#: /readyz stays false this long after a worker started: Sanic 25.12's manager hangs if SIGTERM arrives
#: before it has seen every worker's start-up ack, and it polls for acks every 0.1 s.
_READY_GRACE: Final = 0.5

ProducerFactory = Callable[[GatewaySettings, GatewayMetrics], ReportProducer]


class GatewayContext:
    """Per-worker state (``app.ctx``); the producer and snapshot writer exist once the server starts."""

    def __init__(self, settings: GatewaySettings, producer_factory: ProducerFactory) -> None:
        self.settings = settings
        self.producer_factory = producer_factory
        self.metrics = GatewayMetrics()
        self.metrics.declare((settings.visit_topic, settings.activity_topic), [path for _, path in API_ROUTES])
        self.producer: ReportProducer | None = None
        self.snapshots: SnapshotWriter | None = None
        self.metrics_dir = Path(settings.metrics_dir) if settings.metrics_dir else None
        self.limits = BodyLimits(
            max_body_bytes=settings.max_body_bytes,
            max_decompressed_bytes=settings.max_decompressed_bytes,
            max_expansion_ratio=settings.max_expansion_ratio,
        )
        self.api_keys = tuple(k.encode() for k in settings.api_keys)
        self.cors_any = "*" in settings.cors_origins
        self.cors_origins = frozenset(settings.cors_origins)
        self.produce_timeout = settings.produce_timeout_ms / 1000
        self.retry_after = str(settings.retry_after)
        self.openapi = msgspec.json.encode(build_openapi(api_keys=bool(settings.api_keys)))
        # Request ids without a syscall per request: a random per-worker prefix and a counter.
        self.id_prefix = os.urandom(4).hex() + "-"
        self.id_counter = itertools.count(1)
        self.configure_logs = False
        self.started_at = float("inf")
        self.ready_grace = _READY_GRACE
        self.starter: asyncio.Task[None] | None = None
        self.route_metrics: dict[str, RouteMetrics] = {}


GatewayApp = Sanic[Config, GatewayContext]
GatewayRequest = Request[GatewayApp, SimpleNamespace]
