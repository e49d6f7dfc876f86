"""Shared fixtures: a real Kafka-protocol broker for the session, uuid-named topics.

``FOOTFALL_TEST_BROKERS=host:port`` runs the integration tests against an external
cluster instead of the embedded broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from footfall.kafka import ensure_topics
from stack.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address of the session's broker."""
    external = os.environ.get("FOOTFALL_TEST_BROKERS")
    if external:
        yield external
        return
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker for this test alone (to pause, kill or fill without touching others)."""
    with EmbeddedBroker() as embedded:
        yield embedded


TopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def topic_factory(broker: str) -> AsyncIterator[TopicFactory]:
    """``await topic_factory(partitions=4)`` -> a new uuid-named topic on the session broker."""

    async def create(prefix: str = "t", partitions: int = 4) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        await ensure_topics(broker, [name], partitions, 1)
        return name

    yield create
