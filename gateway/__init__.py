"""Footfall gateway: HTTP ingestion of visit/activity reports into Kafka.

Answers 200 only after Kafka acknowledged every report of a request (acks=all);
batches produce across concurrent requests per worker; bounded memory; JSON errors.
See :mod:`gateway.ingest` for the steps of a request, :mod:`gateway.producer` for the producer
and :mod:`gateway.batching` for batching.
"""

from __future__ import annotations

from gateway.settings import GatewaySettings

__all__ = ["GatewaySettings"]
