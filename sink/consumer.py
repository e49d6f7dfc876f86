"""Typed adapter around aiokafka's consumer (aiokafka ships no type information).

Records are not wrapped (that would cost a Python object per record on the hot path);
:class:`KafkaRecord` is a Protocol that aiokafka's ``ConsumerRecord`` satisfies.

Delivery: this consumer never auto-commits; the worker commits offsets explicitly,
after the records they cover are in fsynced files (or on the retry/DLQ topics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    IllegalStateError,
    InvalidSessionTimeoutError,
    KafkaError,
    KafkaTimeoutError,
)

from footfall.kafka import parse_brokers
from footfall.layout import partition_name
from sink.errors import SessionTimeoutRefusedError

__all__ = ["KafkaRecord", "SinkConsumer", "TopicPartition", "client_id", "tp_name"]

log = logging.getLogger(__name__)

#: How often the group member refreshes its topics' metadata. A change in their partitions
#: (a topic deleted, or created again) makes the group rebalance, and recovery on the new
#: assignment compares each checkpoint with the log (sink.drift): within seconds, not minutes.
_METADATA_MAX_AGE_MS: Final = 10_000


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


def client_id() -> str:
    """``footfall-sink-<host>-<pid>``: how this process's Kafka clients name themselves to the brokers."""
    return f"footfall-sink-{socket.gethostname()}-{os.getpid()}"


def tp_name(tp: TopicPartition) -> str:
    """``topic[partition]`` (:func:`footfall.layout.partition_name`) of ``tp``."""
    return partition_name(tp.topic, tp.partition)


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
        self._session_timeout = session_timeout
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
            # aiokafka looks at its topics' metadata every 5 min by default: a topic deleted and
            # created again would go unassigned (and so unchecked, sink.drift) that long.
            metadata_max_age_ms=_METADATA_MAX_AGE_MS,
        )
        self._topics = list(topics)
        self._listener = _Listener(on_revoked, on_assigned)
        self.group = group
        self._brokers = brokers
        self._client_id = client_id

    async def start(self) -> None:
        self._consumer.subscribe(self._topics, listener=self._listener)
        try:
            await self._consumer.start()
        except InvalidSessionTimeoutError as exc:
            raise SessionTimeoutRefusedError(
                f"the brokers refuse --session-timeout {self._session_timeout:g}: it must lie within their "
                "group.min.session.timeout.ms and group.max.session.timeout.ms (6 s and 30 min by default); "
                "choose a --session-timeout in that range"
            ) from exc

    async def stop(self) -> None:
        dead_fetcher = self.fetcher_error() is not None
        try:
            await self._consumer.stop()
        except KafkaError:
            # aiokafka's close re-raises the dead fetch task's error: reported already.
            if not dead_fetcher:
                raise

    async def getmany(self, wait: float, max_records: int | None = None) -> dict[TopicPartition, list[KafkaRecord]]:
        """Records fetched so far per partition (waits up to ``wait`` seconds for the first)."""
        result: dict[TopicPartition, list[KafkaRecord]] = await self._consumer.getmany(
            timeout_ms=int(wait * 1000), max_records=max_records
        )
        return result

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment())

    def fetcher_error(self) -> BaseException | None:
        """Why aiokafka's background fetch task ended, or None while it runs.

        The task dies on an unexpected error (seen: ``RuntimeError: unable to perform
        operation on <TCPTransport closed=True>`` after a connection reset) and aiokafka
        only logs it: the consumer keeps heartbeating and holding its partitions but
        never returns another record. The worker asks here and restarts instead.
        """
        fetcher = getattr(self._consumer, "_fetcher", None)
        task = getattr(fetcher, "error_future", None)
        if task is None or not task.done() or getattr(fetcher, "_closed", False):
            return None
        if task.cancelled():
            return RuntimeError("fetch task cancelled")
        error: BaseException | None = task.exception()
        if error is not None and error.__cause__ is not None:
            return error.__cause__  # aiokafka wraps the real cause in a generic KafkaError
        return error or RuntimeError("fetch task ended")

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The next offset to be written of each partition (ListOffsets, its own request:
        it answers even when the fetch task has died).

        Raises:
            KafkaError: the broker did not answer (request timeout, not the leader...).
        """
        if not tps:
            return {}
        result: dict[TopicPartition, int] = await self._consumer.end_offsets(list(tps))
        return result

    async def beginning_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The first offset still in the log of each partition (ListOffsets, earliest).

        Raises:
            KafkaError: the broker did not answer.
        """
        if not tps:
            return {}
        result: dict[TopicPartition, int] = await self._consumer.beginning_offsets(list(tps))
        return result

    async def fetch_once(
        self, starts: dict[TopicPartition, int], within: float
    ) -> dict[TopicPartition, list[KafkaRecord]]:
        """The records of one fetch of each partition from ``starts[tp]`` (an offset known to exist).

        For the checks on assignment that must not trust ListOffsets alone (the embedded
        broker answers it with the last batch's *first* offset + 1, not the log's end) and
        that compare a landed record with what the log holds at its offset. A separate
        consumer (no group, so the group's positions are untouched) does it; a fetch returns
        whole batches, so the last record shows how far the log goes.

        Raises:
            KafkaError: a partition gave no record within ``within`` seconds, or the broker
                refused (an offset out of range raises ``OffsetOutOfRangeError``).
        """
        if not starts:
            return {}
        probe: Any = AIOKafkaConsumer(
            bootstrap_servers=parse_brokers(self._brokers),
            client_id=f"{self._client_id}-probe",
            enable_auto_commit=False,
            auto_offset_reset="none",
            fetch_max_wait_ms=100,
        )
        await probe.start()
        try:
            probe.assign(list(starts))
            for tp, offset in starts.items():
                probe.seek(tp, offset)
            found: dict[TopicPartition, list[KafkaRecord]] = {}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + within
            while len(found) < len(starts):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    missing = sorted(tp_name(tp) for tp in starts if tp not in found)
                    raise KafkaTimeoutError(f"no record fetched within {within:g}s from {', '.join(missing)}")
                wanted = [tp for tp in starts if tp not in found]
                batch = await probe.getmany(*wanted, timeout_ms=int(min(remaining, 1.0) * 1000))
                for tp, records in batch.items():
                    if records:
                        found[tp] = records
                        probe.pause(tp)
            return found
        finally:
            await probe.stop()

    def moved_back(self, tp: TopicPartition, expected: int) -> int | None:
        """Where aiokafka moved ``tp``'s fetch position by itself, if below ``expected`` (the
        offset after the last one landed): the offset it went to, ``-1`` while it is resetting;
        ``None`` when the position is where the sink put it.

        The sink only ever seeks past what it landed; aiokafka moves a position on its own only
        when Kafka answers OFFSET_OUT_OF_RANGE (reset to the log's start): the log started over
        or lost its start under the sink. Seen even when the new log is empty (no record
        arrives to show it). Reads aiokafka's subscription state (its internals: pinned).
        """
        subscription = self._consumer._subscription.subscription
        assignment = subscription.assignment if subscription is not None else None
        state = assignment.state_value(tp) if assignment is not None else None
        if state is None:
            return None
        if state.awaiting_reset:
            return -1
        if state.has_valid_position and state.position < expected:
            return int(state.position)
        return None

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Consume ``tp`` from ``offset`` next (a position before the log start resets to
        the earliest offset). A partition no longer assigned is ignored."""
        try:
            self._consumer.seek(tp, max(0, offset))
        except IllegalStateError:
            log.debug("seek on unassigned partition ignored", extra={"tp": tp_name(tp)})

    def pause(self, tp: TopicPartition) -> None:
        with contextlib.suppress(IllegalStateError):
            self._consumer.pause(tp)

    def is_paused(self, tp: TopicPartition) -> bool:
        """True while :meth:`pause` holds ``tp`` (a backoff, a refetch, a lock wait...)."""
        return tp in self._consumer.paused()

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
