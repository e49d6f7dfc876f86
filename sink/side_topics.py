"""Side topics: ``<topic>.dlq`` for poison records, ``<topic>.retry`` for parked batches.

Both carry the source record's key, value, timestamp and headers, plus:

- ``ff-source-topic``, ``ff-source-partition``, ``ff-source-offset`` (ASCII);
- on the DLQ, ``ff-error``: why the record was rejected.

Delivery: every send is acknowledged by all in-sync replicas (``acks=all``) before the
sink treats the source offset as settled; a failed send is retried until acknowledged
(or the worker stops, in which case the source offset is not settled and the record is
consumed again). Hence the DLQ is at-least-once. The retry topic may also hold a record
twice (parked again after a crash); the retry lander lands each source offset once
(:func:`sink.retry.lander_decision`), whatever order the copies arrive in.

What goes to the DLQ is decided by :mod:`sink.poison`; when batches are parked and how
parked records land again, by :mod:`sink.retry`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from footfall.backoff import Backoff
from footfall.kafka import parse_brokers
from footfall.layout import folder_of
from sink.consumer import KafkaRecord
from sink.errors import SideTopicError
from sink.settings import dlq_topic, retry_topic

__all__ = [
    "HEADER_ERROR",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "SideProducer",
    "source_of",
]

log = logging.getLogger(__name__)

HEADER_ERROR: Final = "ff-error"
HEADER_SOURCE_TOPIC: Final = "ff-source-topic"
HEADER_SOURCE_PARTITION: Final = "ff-source-partition"
HEADER_SOURCE_OFFSET: Final = "ff-source-offset"
_OWN_HEADERS: Final = frozenset({HEADER_ERROR, HEADER_SOURCE_TOPIC, HEADER_SOURCE_PARTITION, HEADER_SOURCE_OFFSET})


def source_of(record: KafkaRecord) -> tuple[int, int] | None:
    """(source partition, source offset) of a parked record, None if the headers are missing."""
    partition = offset = None
    for key, value in record.headers:
        if key == HEADER_SOURCE_PARTITION:
            partition = value
        elif key == HEADER_SOURCE_OFFSET:
            offset = value
    if partition is None or offset is None or not partition.isdigit() or not offset.isdigit():
        return None
    return int(partition), int(offset)


#: (record, extra headers, target partition or None for the key's partition)
_Item = tuple[KafkaRecord, list[tuple[str, bytes]], int | None]
#: Pause before sending again what a side topic did not acknowledge.
_SEND_BACKOFF: Final = Backoff(0.2, 5.0)


class SideProducer:
    """Producer for the DLQ and retry topics (``acks=all``; retried until acknowledged)."""

    def __init__(self, brokers: str, *, client_id: str = "footfall-sink") -> None:
        self._producer: Any = AIOKafkaProducer(
            bootstrap_servers=parse_brokers(brokers),
            client_id=client_id,
            acks="all",
            # The embedded broker has no InitProducerId; duplicates are handled by the
            # lander (retry) or tolerated (DLQ is at-least-once).
            enable_idempotence=False,
            linger_ms=5,
            max_request_size=16 << 20,
        )
        self._partitions: dict[str, int] = {}
        self._started = False
        self.stopping = False

    async def start(self) -> None:
        if not self._started:
            await self._producer.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def _partition_count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            parts = await self._producer.partitions_for(topic)
            count = self._partitions[topic] = max(1, len(parts or ()))
        return count

    async def dead_letter(self, topic: str, poison: Sequence[tuple[KafkaRecord, str]]) -> None:
        """Send poison records of ``topic`` to ``<topic>.dlq``; returns once all are acknowledged."""
        target = dlq_topic(folder_of(topic))
        await self._send_all(
            target, [(r, [(HEADER_ERROR, error[:2000].encode(errors="replace"))], None) for r, error in poison]
        )

    async def park(self, topic: str, records: Sequence[KafkaRecord]) -> None:
        """Send records of ``topic`` to ``<topic>.retry``, in order, all of one source partition
        into one retry partition; returns once all are acknowledged."""
        target = retry_topic(topic)
        count = await self._partition_count(target)
        await self._send_all(target, [(r, [], r.partition % count) for r in records])

    async def _send_all(self, target: str, items: list[_Item]) -> None:
        pending = items
        attempt = 0
        while pending:
            futures = []
            for record, extra, partition in pending:
                headers = [(k, v) for k, v in record.headers if k not in _OWN_HEADERS]
                headers += [
                    (HEADER_SOURCE_TOPIC, record.topic.encode()),
                    (HEADER_SOURCE_PARTITION, str(record.partition).encode()),
                    (HEADER_SOURCE_OFFSET, str(record.offset).encode()),
                    *extra,
                ]
                try:
                    fut = await self._producer.send(
                        target,
                        value=record.value,
                        key=record.key,
                        headers=headers,
                        timestamp_ms=record.timestamp,
                        partition=partition,
                    )
                except KafkaError as exc:
                    fut = asyncio.get_running_loop().create_future()
                    fut.set_exception(exc)
                futures.append(fut)
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = [item for item, res in zip(pending, results, strict=True) if isinstance(res, BaseException)]
            if failed:
                first = next(res for res in results if isinstance(res, BaseException))
                if self.stopping:
                    raise SideTopicError(f"{len(failed)} record(s) not acknowledged by {target}: {first!r}")
                attempt += 1
                delay = _SEND_BACKOFF.delay(attempt)
                log.warning(
                    "side topic send failed; retrying",
                    extra={"topic": target, "records": len(failed), "error": repr(first), "delay": delay},
                )
                await asyncio.sleep(delay)
            pending = failed
