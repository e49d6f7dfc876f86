"""Footfall gateway: HTTP ingestion of visit/activity reports into Kafka.

Answers 200 only after Kafka acknowledged every report of a request (acks=all);
batches produce across concurrent requests per worker; bounded memory; JSON errors.
See :mod:`gateway.app` for the request flow and :mod:`gateway.producer` for batching.
"""

from __future__ import annotations

from gateway.settings import GatewaySettings

__all__ = ["GatewaySettings"]
