"""Kafka helpers every role shares: record headers, the default partitioner, topic set-up.

aiokafka ships no type information, so it stays behind small typed functions here and
in each role's adapter (``gateway/producer.py``, ``sink/consumer.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError, TopicAlreadyExistsError  # type: ignore[import-untyped]
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

from footfall.errors import BrokerUnavailableError, ConfigError
from footfall.layout import check_topic

__all__ = [
    "HEADER_RECEIVED_MS",
    "HEADER_REQUEST_ID",
    "HEADER_SCHEMA",
    "HEADER_TYPE",
    "ensure_topics",
    "parse_brokers",
    "partition_for",
    "wait_for_broker",
]

log = logging.getLogger(__name__)

#: Record headers the gateway writes: report type, schema version,
#: gateway receive time (epoch ms, ASCII digits) and the HTTP request id.
HEADER_TYPE: Final = "ff-type"
HEADER_SCHEMA: Final = "ff-schema"
HEADER_RECEIVED_MS: Final = "ff-received-ms"
HEADER_REQUEST_ID: Final = "ff-request-id"


def parse_brokers(brokers: str) -> list[str]:
    """``"h1:9092,h2:9092"`` -> ``["h1:9092", "h2:9092"]``.

    Raises:
        ConfigError: empty, or an entry is not ``host:port`` with a numeric port.
    """
    out = []
    for part in brokers.split(","):
        part = part.strip()
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--brokers: {part!r} is not host:port (e.g. 127.0.0.1:9092)")
        out.append(part)
    if not out:
        raise ConfigError("--brokers: give at least one host:port")
    return out


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, Java client) picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions  # type: ignore[no-any-return]


async def wait_for_broker(brokers: str, timeout: float) -> None:  # noqa: ASYNC109 - a deadline across retries
    """Wait until the cluster answers a metadata request.

    Raises:
        BrokerUnavailableError: no answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=parse_brokers(brokers), request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaError, OSError) as exc:
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.2)
    raise BrokerUnavailableError(
        f"Kafka at {brokers} did not answer within {timeout:g}s ({last!r}); is the broker running?"
    )


async def ensure_topics(brokers: str, topics: Iterable[str], partitions: int, replication_factor: int) -> None:
    """Create the topics that do not exist yet; leave existing ones alone.

    Raises:
        BrokerUnavailableError: the cluster cannot be reached.
        ConfigError: a topic name is not legal.
    """
    wanted = [check_topic(t) for t in topics]
    admin = AIOKafkaAdminClient(bootstrap_servers=parse_brokers(brokers), request_timeout_ms=10000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                await admin.create_topics([NewTopic(t, partitions, replication_factor) for t in missing])
                log.info("created topics", extra={"topics": missing, "partitions": partitions})
            except TopicAlreadyExistsError:
                pass  # another process created them first
    except KafkaError as exc:
        raise BrokerUnavailableError(f"cannot create topics {wanted} on {brokers}: {exc!r}") from exc
    finally:
        await admin.close()
