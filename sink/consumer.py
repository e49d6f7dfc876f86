"""Typed adapter around aiokafka's consumer (aiokafka ships no type information).

Records are not wrapped (that would cost a Python object per record on the hot path);
:class:`KafkaRecord` is a Protocol that aiokafka's ``ConsumerRecord`` satisfies.

Delivery: this consumer never auto-commits; the worker commits offsets explicitly,
after the records they cover are in fsynced files (or on the retry/DLQ topics).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.errors import IllegalStateError, KafkaError  # type: ignore[import-untyped]

from footfall.kafka import parse_brokers

__all__ = ["KafkaRecord", "SinkConsumer", "TopicPartition"]

log = logging.getLogger(__name__)


class KafkaRecord(Protocol):
    """What the sink reads from a consumed record (aiokafka's ``ConsumerRecord``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


TPs = list[TopicPartition]
Callback = Callable[[TPs], Awaitable[None]]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_revoked: Callback, on_assigned: Callback) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._on_revoked(sorted(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._on_assigned(sorted(assigned))


class SinkConsumer:
    """One consumer group member subscribed to some topics, with manual commits.

    ``on_revoked`` runs before a rebalance takes partitions away (flush, fsync, commit
    there); ``on_assigned`` runs after the new assignment and before any record of it
    is returned (recover and seek there). Neither runs on :meth:`stop`.
    """

    def __init__(
        self,
        brokers: str,
        group: str,
        topics: Sequence[str],
        *,
        on_revoked: Callback,
        on_assigned: Callback,
        session_timeout: float = 10.0,
        fetch_max_bytes: int = 4 << 20,
        client_id: str = "footfall-sink",
    ) -> None:
        session_ms = int(session_timeout * 1000)
        self._consumer: Any = AIOKafkaConsumer(
            bootstrap_servers=parse_brokers(brokers),
            group_id=group,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 4),
            rebalance_timeout_ms=max(session_ms, 30_000),
            max_partition_fetch_bytes=fetch_max_bytes,
            fetch_max_bytes=max(fetch_max_bytes * 4, 50 << 20),
            fetch_max_wait_ms=100,
        )
        self._topics = list(topics)
        self._listener = _Listener(on_revoked, on_assigned)
        self.group = group

    async def start(self) -> None:
        self._consumer.subscribe(self._topics, listener=self._listener)
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def getmany(self, wait: float, max_records: int | None = None) -> dict[TopicPartition, list[KafkaRecord]]:
        """Records fetched so far per partition (waits up to ``wait`` seconds for the first)."""
        result: dict[TopicPartition, list[KafkaRecord]] = await self._consumer.getmany(
            timeout_ms=int(wait * 1000), max_records=max_records
        )
        return result

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Consume ``tp`` from ``offset`` next (a position before the log start resets to
        the earliest offset). A partition no longer assigned is ignored."""
        try:
            self._consumer.seek(tp, max(0, offset))
        except IllegalStateError:
            log.debug("seek on unassigned partition ignored", extra={"tp": f"{tp.topic}[{tp.partition}]"})

    def pause(self, tp: TopicPartition) -> None:
        with contextlib.suppress(IllegalStateError):
            self._consumer.pause(tp)

    def resume(self, tp: TopicPartition) -> None:
        with contextlib.suppress(IllegalStateError):
            self._consumer.resume(tp)

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit ``{tp: next offset}`` to Kafka. Advisory (monitoring, lag): recovery
        relies on the checkpoint files, so a failed commit is logged, not raised."""
        if not offsets:
            return True
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("offset commit failed (advisory)", extra={"group": self.group, "error": repr(exc)})
            return False
        return True
