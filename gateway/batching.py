"""The gateway's producer: batches the reports of concurrent requests per partition.

Delivery semantics: :meth:`BatchingProducer.submit` appends a request's records to
per-partition batches and returns futures; each future resolves to ``None`` only when
the broker has acknowledged (``acks=all``) *the whole batch*, or to the error: the
batch failed, or it was not acknowledged within ``--produce-timeout-ms`` of its first
record (:class:`~gateway.errors.ProduceTimeoutError`; one timer per batch, not per
request). The gateway answers 200 only when every future of the request resolved to
``None``; anything else is a 503, and the records may or may not be in Kafka
(at-least-once: a client retry can duplicate them, never lose them). A timed-out batch
stays accounted for (in-flight bytes) until aiokafka settles it.

Batching (per worker process):

1. Each partition has one *open* batch (an aiokafka ``BatchBuilder``). Records of
   concurrent requests are appended to it; a request keeps the batch's future.
2. A new batch is handed to aiokafka (``send_batch``) at once, and stays open for
   appends while it waits in aiokafka's accumulator: aiokafka keeps one produce
   request in flight per broker, so under load the batch fills up while the previous
   request is on the wire, and is closed only when the sender drains it (or it is
   full). That is adaptive linger: no added delay when idle, big batches when busy,
   and few produce requests (system calls are dear on these machines).
3. Submissions per partition are ordered (one task waits for the previous), so
   records of one key keep their order.
4. Futures are our own and never cancelled by a request going away (client gone):
   the batch is produced and accounted for whoever waits.

No duplicates from re-sends: aiokafka runs with the sender of :mod:`gateway.sender`, which,
unless the producer is idempotent, never re-sends a batch that may already be stored (its
connection broke after the request left); that batch fails, and its requests get 503.
In-flight accounting, readiness and the broker probe: :class:`gateway.producer.KafkaProducerBase`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any, Final

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from footfall.errors import BrokerError, BrokerUnavailableError
from footfall.kafka import partition_for
from gateway.errors import produce_failure
from gateway.metrics import GatewayMetrics
from gateway.producer import RECORD_OVERHEAD, Delivery, Headers, KafkaProducerBase, Record
from gateway.settings import GatewaySettings

__all__ = ["BatchingProducer"]

log = logging.getLogger(__name__)

_PARTITION_CACHE_SIZE: Final = 100_000


class _Batch:
    __slots__ = ("builder", "deadline", "future", "nbytes", "records", "started", "topic")

    def __init__(self, builder: Any, future: Delivery, topic: str) -> None:
        self.builder = builder
        self.future = future
        self.topic = topic
        self.nbytes = 0
        self.records = 0
        self.started = time.perf_counter()
        self.deadline: asyncio.TimerHandle | None = None


class _Partition:
    __slots__ = ("batch", "submitting")

    def __init__(self) -> None:
        self.batch: _Batch | None = None
        self.submitting: asyncio.Task[None] | None = None


class BatchingProducer(KafkaProducerBase):
    """Batches records of concurrent requests per partition (see the module docstring)."""

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics, *, idempotence: bool) -> None:
        super().__init__(settings, metrics, idempotence=idempotence)
        self._tps: dict[tuple[str, int], _Partition] = {}
        # userId -> partition per topic; a client sends one user's days again and again.
        self._partition_cache: dict[str, tuple[int, dict[bytes, int]]] = {}

    async def submit(
        self, topic: str, records: Sequence[Record], headers: Headers, timestamp_ms: int
    ) -> list[Delivery]:
        """Append every record of one request to its partition's open batch; return the batches' futures.

        Synchronous in effect (never awaits), so a request is queued whole or not at all.
        """
        size = self._admit(records, headers)
        partitions = self._partitions(topic)
        cache = self._partition_cache.get(topic)
        if cache is None or cache[0] != partitions or len(cache[1]) > _PARTITION_CACHE_SIZE:
            cache = self._partition_cache[topic] = (partitions, {})
        known = cache[1]
        per_record = RECORD_OVERHEAD + sum([len(k) + len(v) for k, v in headers])
        deliveries: list[Delivery] = []
        last_key = b""
        partition = -1
        batch: _Batch  # set with the first key (partition starts at -1)
        joined: _Batch | None = None
        # Per record only what must be per record; the partition, its state and the open batch's
        # append are looked up again only when the key changes (a request is usually one user).
        for key, value in records:
            if key != last_key:  # murmur2 (~4 us in Python) once per user, not per report or request
                last_key = key
                cached = known.get(key)
                if cached is None:
                    cached = known[key] = partition_for(key, partitions)
                if cached != partition:
                    partition = cached
                    tp = (topic, partition)
                    state = self._tps.get(tp)
                    if state is None:
                        state = self._tps[tp] = _Partition()
                    batch = state.batch or self._open(tp, state)
            if batch.builder.append(timestamp=timestamp_ms, key=key, value=value, headers=headers) is None:
                # Full (or closed by its deadline): the next batch; its first record always fits.
                batch = self._open((topic, partition), self._tps[topic, partition])
                batch.builder.append(timestamp=timestamp_ms, key=key, value=value, headers=headers)
            if batch is not joined:  # wait only on batches holding our records: one per partition, mostly
                joined = batch
                if batch.future not in deliveries:
                    deliveries.append(batch.future)
            batch.nbytes += len(key) + len(value) + per_record
            batch.records += 1
        self._inflight += size
        self._metrics.inflight_bytes.set(self._inflight)
        return deliveries

    def _open(self, tp: tuple[str, int], state: _Partition) -> _Batch:
        loop = asyncio.get_running_loop()
        batch = _Batch(self._producer.create_batch(), loop.create_future(), tp[0])
        state.batch = batch
        self._track(batch.future)
        batch.deadline = loop.call_later(self._produce_timeout, self._expire_batch, batch)
        state.submitting = loop.create_task(self._submit(tp, batch, state.submitting))
        return batch

    def _expire_batch(self, batch: _Batch) -> None:
        # Its requests get 503 now; later requests must not join a batch whose deadline passed,
        # so it takes no more records (aiokafka still produces it and settles the bytes).
        batch.builder.close()
        self._expire(batch.future)

    async def _submit(self, tp: tuple[str, int], batch: _Batch, previous: asyncio.Task[None] | None) -> None:
        # 1. keep per-partition order: the previous batch is handed over first;
        # 2. send_batch waits (appends still land) until aiokafka drained the previous one;
        # 3. the ack (or failure) settles our future from a callback, whoever still waits.
        if previous is not None and not previous.done():
            await asyncio.wait((previous,))
        try:
            if self._producer is None:
                raise BrokerUnavailableError("the producer is stopped")
            producer = self._producer
            ack = await producer.send_batch(batch.builder, tp[0], partition=tp[1])
        except (KafkaError, BrokerError) as exc:
            batch.builder.close()
            self._settle(batch, exc)
            return
        except asyncio.CancelledError:
            batch.builder.close()
            self._settle(batch, BrokerUnavailableError("the producer stopped before the batch was sent"))
            raise
        ack.add_done_callback(functools.partial(self._on_ack, batch, producer))

    def _on_ack(self, batch: _Batch, producer: Any, ack: asyncio.Future[Any]) -> None:
        error = ack.exception() if not ack.cancelled() else BrokerUnavailableError("produce cancelled")
        self._settle(batch, error, producer)

    def _settle(self, batch: _Batch, error: BaseException | None, producer: Any = None) -> None:
        m = self._metrics
        m.ack_seconds.labels(batch.topic).observe(time.perf_counter() - batch.started)
        m.batch_records.labels(batch.topic).observe(batch.records)
        m.batch_bytes.labels(batch.topic).observe(batch.nbytes)
        if error is None:
            self._last_ack = time.monotonic()
        else:
            self._batch_failed(error, producer)
            log.warning("batch failed", extra={"topic": batch.topic, "records": batch.records, "error": repr(error)})
            error = produce_failure(error)
        if batch.deadline is not None:
            batch.deadline.cancel()
        self._release(batch.nbytes)
        if not batch.future.done():
            batch.future.set_result(error)
