"""Kafka helpers every role shares: record headers, the partitioner, probes, topic set-up, errors.

aiokafka ships no type information, so it stays behind small typed functions here and
in each role's adapter (``gateway/producer.py``, ``sink/consumer.py``).

- **Probes** (the one broker prober): :func:`kafka_answers` / :func:`kafka_answers_async` send one
  ApiVersions v0 request and say whether a Kafka broker answered it (a paused broker accepts the
  connection but does not answer); :func:`probe_idempotence` asks whether the cluster grants a
  producer id (InitProducerId).
- **Errors** (the one translator): :func:`broker_error` turns what the Kafka client raised
  (aiokafka's ``KafkaError``, ``OSError``, ``TimeoutError``) into Footfall's
  :class:`~footfall.errors.BrokerError` tree, keeping aiokafka's own ``retriable`` policy and the
  error's name as the word logs and metric labels use (:func:`kafka_error_name`);
  :func:`kafka_errors` is the same as a context manager (``raise ... from exc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.client import AIOKafkaClient  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError, TopicAlreadyExistsError  # type: ignore[import-untyped]
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from aiokafka.protocol.transaction import InitProducerIdRequest  # type: ignore[import-untyped]

from footfall.errors import BrokerError, BrokerUnavailableError, ConfigError
from footfall.layout import check_topic

__all__ = [
    "HEADER_RECEIVED_MS",
    "HEADER_REQUEST_ID",
    "HEADER_SCHEMA",
    "HEADER_TYPE",
    "KAFKA_FAILURES",
    "broker_error",
    "cluster_size",
    "ensure_topics",
    "in_words",
    "kafka_answers",
    "kafka_answers_async",
    "kafka_error_name",
    "kafka_errors",
    "parse_brokers",
    "partition_for",
    "probe_idempotence",
    "topic_partitions",
    "wait_for_broker",
]

log = logging.getLogger(__name__)

#: Record headers the gateway writes: report type, schema version,
#: gateway receive time (epoch ms, ASCII digits) and the HTTP request id.
HEADER_TYPE: Final = "ff-type"
HEADER_SCHEMA: Final = "ff-schema"
HEADER_RECEIVED_MS: Final = "ff-received-ms"
HEADER_REQUEST_ID: Final = "ff-request-id"

#: What a call into the Kafka client may fail with: aiokafka's errors, the socket's, a deadline.
KAFKA_FAILURES: Final = (KafkaError, OSError, TimeoutError)


def kafka_error_name(exc: BaseException) -> str:
    """The word logs and metric labels use for a Kafka failure: the client's error class name
    (``KafkaConnectionError``, ``RequestTimedOutError``), also through a translated error."""
    if isinstance(exc, BrokerError) and exc.kafka_error:
        return exc.kafka_error
    return type(exc).__name__


def broker_error(exc: BaseException, doing: str = "") -> BrokerError:
    """The Footfall error for a failure of the Kafka client (the one translation).

    A :class:`~footfall.errors.BrokerError` passes through. Otherwise the class follows the
    failure's own policy, never its message: a connection or timeout failure, or an aiokafka
    error whose class is ``retriable``, is :class:`~footfall.errors.BrokerUnavailableError`
    (try again later); an error class naming its Footfall class (``footfall_error``, e.g. the
    gateway sender's "outcome unknown") becomes that class; anything else is ``BrokerError``.

    Args:
        exc: what the client raised (or a delivery failed with).
        doing: what was being done, for the message: ``"cannot create topics on h:9092"``.
    """
    if isinstance(exc, BrokerError):
        return exc
    cls: type[BrokerError] = getattr(type(exc), "footfall_error", None) or (
        BrokerUnavailableError
        if isinstance(exc, OSError | TimeoutError) or getattr(exc, "retriable", False)
        else BrokerError
    )
    error = cls(f"{doing}: {in_words(exc)}" if doing else in_words(exc))
    error.kafka_error = type(exc).__name__
    return error


def in_words(exc: BaseException) -> str:
    """A client failure for a one-line message: its class and its text, never a repr.

    aiokafka's bootstrap failure lists address tuples (``('127.0.0.1', 9092,
    <AddressFamily.AF_INET: 2>)``); the user gave the list, so the words say what happened.
    """
    name = type(exc).__name__
    text = str(exc).strip().removeprefix(f"{name}: ")  # aiokafka's str() already names the class
    if text.startswith("Unable to bootstrap from"):
        return f"{name}: no broker in the list answered"
    return f"{name}: {text}" if text and text != name else name


@contextlib.contextmanager
def kafka_errors(doing: str) -> Iterator[None]:
    """Raise what the Kafka client raises inside the block as :func:`broker_error` (``from exc``)."""
    try:
        yield
    except KAFKA_FAILURES as exc:
        raise broker_error(exc, doing) from exc


# ApiVersions v0 (api key 18), correlation id 0x0F0F, client id "footfall": every Kafka broker answers it.
_CORRELATION_ID: Final = 0x0F0F
_API_VERSIONS_BODY: Final = struct.pack(">hhih", 18, 0, _CORRELATION_ID, 8) + b"footfall"
_API_VERSIONS_REQUEST: Final = struct.pack(">i", len(_API_VERSIONS_BODY)) + _API_VERSIONS_BODY


def _answered(header: bytes) -> bool:
    """True if an 8-byte response header (size, correlation id) answers our ApiVersions request."""
    return bool(struct.unpack(">ii", header)[1] == _CORRELATION_ID)


def kafka_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if ``host:port`` answers a Kafka ApiVersions request within ``timeout`` s (blocking)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_API_VERSIONS_REQUEST)
            header = b""
            while len(header) < 8:
                chunk = sock.recv(8 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    return _answered(header)


async def kafka_answers_async(host: str, port: int, within: float) -> bool:
    """:func:`kafka_answers` for an event loop: True if ``host:port`` answers within ``within`` s."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(_API_VERSIONS_REQUEST)
            await writer.drain()
            header = await reader.readexactly(8)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
    return _answered(header)


#: InitProducerId answers that mean "ask again shortly": a fresh Kafka cluster answers
#: COORDINATOR_LOAD_IN_PROGRESS for a moment after its metadata is complete.
_PRODUCER_ID_RETRIABLE: Final = frozenset({7, 14, 15, 16})  # REQUEST_TIMED_OUT, COORDINATOR_*, NOT_COORDINATOR


async def probe_idempotence(brokers: str, within: float = 5.0) -> bool:
    """True if the cluster grants a producer id (InitProducerId), i.e. supports idempotence.

    The embedded broker (Tansu) answers InitProducerId with an error (-1); real Kafka grants one.
    Retriable answers are asked again until ``within`` runs out, so a cluster that is still
    loading its coordinator is not mistaken for one without idempotence.
    """
    client = AIOKafkaClient(bootstrap_servers=parse_brokers(brokers), request_timeout_ms=int(within * 1000))
    try:
        async with asyncio.timeout(within):
            await client.bootstrap()
            while True:
                node = client.get_random_node()
                response = await client.send(node, InitProducerIdRequest(None, 60_000))
                if response.error_code not in _PRODUCER_ID_RETRIABLE:
                    return bool(response.error_code == 0)
                await asyncio.sleep(0.1)
    except KAFKA_FAILURES:
        return False
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await client.close()


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
        except KAFKA_FAILURES as exc:
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.2)
    raise BrokerUnavailableError(
        f"Kafka at {brokers} did not answer within {timeout:g}s"
        + (f" ({in_words(last)})" if last is not None else "")
        + "; is the broker running?"
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
        with kafka_errors(f"cannot create topics {wanted} on {brokers}"):
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t not in existing]
            if missing:
                try:
                    await admin.create_topics([NewTopic(t, partitions, replication_factor) for t in missing])
                    log.info("created topics", extra={"topics": missing, "partitions": partitions})
                except TopicAlreadyExistsError:
                    pass  # another process created them first
    finally:
        await admin.close()


async def _cluster_metadata(brokers: str) -> Any:
    """aiokafka's ``ClusterMetadata`` of the whole cluster, read once."""
    client = AIOKafkaClient(bootstrap_servers=parse_brokers(brokers), request_timeout_ms=10000)
    try:
        with kafka_errors(f"cannot read the cluster's metadata on {brokers}"):
            await client.bootstrap()
            return await client.fetch_all_metadata()
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await client.close()


async def topic_partitions(brokers: str, topics: Iterable[str]) -> dict[str, int]:
    """How many partitions each of ``topics`` has now (0: the topic does not exist).

    Raises:
        BrokerUnavailableError: the cluster cannot be reached.
    """
    metadata = await _cluster_metadata(brokers)
    return {t: len(metadata.partitions_for_topic(t) or ()) for t in topics}


async def cluster_size(brokers: str) -> int:
    """How many brokers the cluster's metadata lists now.

    Raises:
        BrokerUnavailableError: the cluster cannot be reached.
    """
    return len((await _cluster_metadata(brokers)).brokers())
