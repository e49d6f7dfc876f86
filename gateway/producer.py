"""A typed producer adapter around aiokafka that batches reports across requests.

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

Bounded memory: bytes of records not yet acknowledged are counted per worker;
:meth:`submit` refuses a request with :class:`~gateway.errors.SaturatedError` when
they would pass ``max_inflight_bytes``. Bytes are released when a batch is acked or fails.

No duplicates from re-sends: aiokafka runs with the sender of :mod:`gateway.sender`, which,
unless the producer is idempotent, never re-sends a batch that may already be stored (its
connection broke after the request left); that batch fails, and its requests get 503.

Liveness: aiokafka's sender task does all the sending; if it dies, every later batch fails.
The broker probe (every 0.5 s) notices, logs an error, turns ``/readyz`` false
(``sender_alive: false``) and replaces the aiokafka producer with a new one as soon as the
broker accepts a connection; batches not yet handed over go to the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
import time
from collections.abc import Sequence
from typing import Any, Final, NamedTuple, Protocol

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.client import AIOKafkaClient  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from aiokafka.protocol.transaction import InitProducerIdRequest  # type: ignore[import-untyped]

from footfall.errors import BrokerError, BrokerUnavailableError
from footfall.kafka import parse_brokers, partition_for
from gateway.errors import BrokerDownError, ProduceFailedError, ProduceTimeoutError, SaturatedError, UnavailableError
from gateway.metrics import GatewayMetrics
from gateway.sender import OutcomeUnknownError, install_sender
from gateway.settings import GatewaySettings

__all__ = [
    "BatchingProducer",
    "Delivery",
    "Headers",
    "PerReportProducer",
    "Record",
    "ReportProducer",
    "create_producer",
    "probe_idempotence",
]

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
#: What a request waits on: resolves to None once acked, or to the error that failed it.
Delivery = asyncio.Future[BaseException | None]

_RECORD_OVERHEAD: Final = 24  # varints, attributes, offsets/timestamp deltas: a fair upper bound
_PROBE_INTERVAL: Final = 0.5
_PROBE_TIMEOUT: Final = 1.0
_PROBE_MISSES: Final = 3
#: A batch acknowledged this recently proves the broker reachable, whatever the probe says.
_ACK_EVIDENCE: Final = 2.0
#: A produce timeout or failed batch keeps /readyz false for this long (seconds).
_FAILURE_HOLD: Final = 1.0
#: /readyz turns false above this fraction of --max-inflight-bytes, and for a while after a shed.
_SATURATION: Final = 0.9
_SHED_HOLD: Final = 1.0
_PARTITION_CACHE_SIZE: Final = 100_000
_API_VERSIONS_V0: Final = struct.pack(">hhih", 18, 0, 0x0F0F, 8) + b"footfall"


class Record(NamedTuple):
    """One Kafka record: key (userId bytes) and value (the re-encoded report)."""

    key: bytes
    value: bytes


class ReportProducer(Protocol):
    """What the HTTP layer needs from a producer (the tests supply a fake)."""

    @property
    def inflight_bytes(self) -> int: ...

    @property
    def broker_reachable(self) -> bool: ...

    @property
    def sender_alive(self) -> bool:
        """False from the moment aiokafka's sender task is found dead until its producer is replaced."""
        ...

    def ready(self) -> bool:
        """Broker reachable, sender alive, no recent failure, not saturated."""
        ...

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...

    async def submit(
        self, topic: str, records: Sequence[Record], headers: Headers, timestamp_ms: int
    ) -> list[Delivery]:
        """Queue every record of one request, or none.

        Returns:
            Futures that resolve to None once Kafka acknowledged their records, or to the error
            (a :class:`~gateway.errors.GatewayError` such as ProduceTimeoutError, or a Kafka error),
            always within ``--produce-timeout-ms``. Never cancel them: other requests share them.

        Raises:
            SaturatedError: the in-flight byte cap would be passed.
            UnavailableError: the broker is known to be unreachable, or the producer is stopping.
        """
        ...


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


async def _kafka_answers(host: str, port: int, within: float) -> bool:
    """True if ``host:port`` answers an ApiVersions request within ``within`` seconds (a paused broker does not)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(struct.pack(">i", len(_API_VERSIONS_V0)) + _API_VERSIONS_V0)
            await writer.drain()
            header = await reader.readexactly(8)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
    return bool(struct.unpack(">ii", header)[1] == 0x0F0F)


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
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await client.close()


class _BaseProducer:
    """aiokafka life cycle, broker probing, partition counts and in-flight accounting."""

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics, *, idempotence: bool) -> None:
        self._settings = settings
        self._metrics = metrics
        self._idempotence = idempotence
        self._producer: Any = None
        self._inflight = 0
        self._inflight_requests = 0
        self._cap = settings.max_inflight_bytes
        self._partition_counts: dict[str, int] = {}
        self._probe_ok = True
        self._last_failure = -1e9
        self._last_ack = -1e9
        self._last_shed = -1e9
        self._probe_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._sender_alive = True
        self._retired: set[asyncio.Task[None]] = set()  # dead producers being stopped
        self._unsettled = 0  # batches (or per-report deliveries) not yet acked or failed
        self._settled: asyncio.Event | None = None
        self._produce_timeout = settings.produce_timeout_ms / 1000
        self._brokers = [(h, int(p)) for h, _, p in (b.rpartition(":") for b in parse_brokers(settings.brokers))]

    @property
    def inflight_bytes(self) -> int:
        return self._inflight

    @property
    def broker_reachable(self) -> bool:
        return self._probe_ok

    @property
    def sender_alive(self) -> bool:
        return self._sender_alive

    def ready(self) -> bool:
        now = time.monotonic()
        return (
            self._probe_ok
            and self._sender_alive
            and not self._stopping
            and now - self._last_failure > _FAILURE_HOLD
            and now - self._last_shed > _SHED_HOLD
            and self._inflight < self._cap * _SATURATION
        )

    def note_timeout(self) -> None:
        """A delivery passed its deadline: counts as a broker failure (readiness, metrics)."""
        self._last_failure = time.monotonic()
        self._metrics.broker_errors.labels("produce_timeout").inc()

    async def start(self) -> None:
        """Connect, learn partition counts, start the broker probe. Idempotent."""
        if self._producer is not None:
            return
        s = self._settings
        self._producer = await self._start_kafka_producer()
        self._settled = asyncio.Event()
        self._settled.set()
        self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())
        log.info(
            "producer started",
            extra={"partitions": self._partition_counts, "idempotence": self._idempotence, "mode": s.produce_mode},
        )

    async def _start_kafka_producer(self) -> Any:
        """A started aiokafka producer (with the safe sender) that knows the topics' partition counts."""
        s = self._settings
        producer = AIOKafkaProducer(
            bootstrap_servers=parse_brokers(s.brokers),
            acks="all",
            linger_ms=s.linger_ms,
            max_batch_size=s.batch_size,
            max_request_size=max(s.batch_size, 1024 * 1024),
            compression_type=None if s.compression == "none" else s.compression,
            request_timeout_ms=s.request_timeout_ms,
            enable_idempotence=self._idempotence,
            client_id="footfall-gateway",
        )
        install_sender(producer)
        try:
            await producer.start()
            for topic in (s.visit_topic, s.activity_topic):
                self._partition_counts[topic] = len(await producer.partitions_for(topic))
        except (KafkaError, asyncio.CancelledError) as exc:
            with contextlib.suppress(KafkaError):
                await producer.stop()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise BrokerUnavailableError(f"cannot start the Kafka producer on {s.brokers}: {exc!r}") from exc
        return producer

    def _sender_died(self) -> BaseException | None:
        """The exception aiokafka's sender task ended with, if it is no longer running."""
        sender = self._producer._sender if self._producer is not None else None
        task = sender.sender_task if sender is not None else None
        if task is None or not task.done():
            return None
        return task.exception() if not task.cancelled() else asyncio.CancelledError()

    async def _replace_producer(self, error: BaseException) -> None:
        """Swap a producer whose sender died for a new one (retried at each probe while the broker refuses)."""
        if self._sender_alive:
            self._sender_alive = False
            self._metrics.broker_errors.labels("sender_died").inc()
            log.error("Kafka producer's sender task died; replacing the producer", extra={"error": repr(error)})
        try:
            within = self._settings.request_timeout_ms / 1000
            producer = await asyncio.wait_for(self._start_kafka_producer(), timeout=within)
        except (BrokerUnavailableError, TimeoutError) as exc:
            log.warning("producer not replaced yet; retrying", extra={"error": repr(exc)})
            return
        dead, self._producer = self._producer, producer
        self._sender_alive = True
        self._metrics.producer_replacements.inc()
        log.warning("producer replaced", extra={"brokers": self._settings.brokers})
        stopping = asyncio.get_running_loop().create_task(self._stop_dead(dead))
        self._retired.add(stopping)
        stopping.add_done_callback(self._retired.discard)

    @staticmethod
    async def _stop_dead(producer: Any) -> None:
        # Its sender already failed every batch it held; this only closes its connections.
        try:
            await asyncio.wait_for(producer.stop(), timeout=5.0)
        except (TimeoutError, KafkaError) as exc:
            log.warning("dead producer did not stop cleanly", extra={"error": repr(exc)})

    async def stop(self, grace: float) -> None:
        """Stop taking records, wait up to ``grace`` s for outstanding acks, close. Idempotent.

        1. refuse new submissions; 2. push open batches out and await their acks;
        3. stop aiokafka (whatever is still unacked after the deadline fails and is counted).
        """
        self._stopping = True
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        producer, self._producer = self._producer, None
        if producer is None:
            return
        deadline = time.monotonic() + grace
        if self._settled is not None and self._unsettled:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), timeout=grace)
        left = self._unsettled
        try:
            await asyncio.wait_for(producer.stop(), timeout=max(0.1, deadline - time.monotonic()))
        except (TimeoutError, KafkaError) as exc:
            log.warning("producer did not stop cleanly", extra={"error": repr(exc)})
        if self._retired:
            await asyncio.wait(self._retired)
        log.info("producer stopped", extra={"unacked_batches": left, "inflight_bytes": self._inflight})

    def _partitions(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            raise UnavailableError(f"no metadata for topic {topic!r} yet")
        return count

    async def _probe_loop(self) -> None:
        failures = 0
        while True:
            answered = False
            for host, port in self._brokers:
                if await _kafka_answers(host, port, _PROBE_TIMEOUT):
                    answered = True
                    break
            # Acks still arriving prove the broker up: on a CPU-starved machine the probe's answer
            # can take over a second (seen under wrk) while produce requests flow fine.
            if answered or time.monotonic() - self._last_ack < _ACK_EVIDENCE:
                failures = 0
            else:
                failures += 1
                self._metrics.broker_errors.labels("probe").inc()
            # Down only after consecutive misses: one slow answer must not shed load.
            ok = failures < _PROBE_MISSES
            if ok != self._probe_ok:
                log.warning(
                    "broker reachable" if ok else "broker unreachable", extra={"brokers": self._settings.brokers}
                )
            self._probe_ok = ok
            if not self._stopping and (died := self._sender_died()) is not None:
                await self._replace_producer(died)
            self._refresh_partition_counts()
            self._metrics.ready.set(1.0 if self.ready() else 0.0)
            await asyncio.sleep(_PROBE_INTERVAL)

    def _refresh_partition_counts(self) -> None:
        cluster = self._producer.client.cluster if self._producer is not None else None
        if cluster is None:
            return
        for topic in self._partition_counts:
            parts = cluster.partitions_for_topic(topic)
            if parts:
                self._partition_counts[topic] = len(parts)

    def _admit(self, records: Sequence[Record], headers: Headers) -> int:
        """Size of the request in bytes if it may be queued now; else raise (nothing queued)."""
        if self._stopping or self._producer is None:
            raise UnavailableError("the gateway is shutting down")
        if not self._probe_ok:
            raise BrokerDownError("Kafka is unreachable; retry later")
        if not self._sender_alive:
            raise UnavailableError("the Kafka producer is being replaced; retry later")
        per_record = _RECORD_OVERHEAD + sum([len(k) + len(v) for k, v in headers])
        size = sum([len(key) + len(value) for key, value in records]) + per_record * len(records)
        if self._inflight and self._inflight + size > self._cap:
            self._last_shed = time.monotonic()
            raise SaturatedError(f"{self._inflight} bytes await the broker's ack (cap {self._cap}); retry later")
        return size

    def _release(self, nbytes: int) -> None:
        self._inflight -= nbytes
        self._metrics.inflight_bytes.set(self._inflight)
        self._unsettled -= 1
        if not self._unsettled and self._settled is not None:
            self._settled.set()

    def _track(self, delivery: Delivery) -> None:
        """Count a delivery that aiokafka has not settled yet (stop() waits for them)."""
        self._unsettled += 1
        if self._settled is not None:
            self._settled.clear()

    def _expire(self, delivery: Delivery) -> None:
        if not delivery.done():
            self.note_timeout()
            delivery.set_result(ProduceTimeoutError(f"Kafka did not acknowledge within {self._produce_timeout:g} s"))


class BatchingProducer(_BaseProducer):
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
        per_record = _RECORD_OVERHEAD + sum([len(k) + len(v) for k, v in headers])
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
            ack = await self._producer.send_batch(batch.builder, tp[0], partition=tp[1])
        except (KafkaError, BrokerError) as exc:
            batch.builder.close()
            self._settle(batch, exc)
            return
        except asyncio.CancelledError:
            batch.builder.close()
            self._settle(batch, BrokerUnavailableError("the producer stopped before the batch was sent"))
            raise
        ack.add_done_callback(functools.partial(self._on_ack, batch))

    def _on_ack(self, batch: _Batch, ack: asyncio.Future[Any]) -> None:
        error = ack.exception() if not ack.cancelled() else BrokerUnavailableError("produce cancelled")
        self._settle(batch, error)

    def _settle(self, batch: _Batch, error: BaseException | None) -> None:
        m = self._metrics
        m.ack_seconds.labels(batch.topic).observe(time.perf_counter() - batch.started)
        m.batch_records.labels(batch.topic).observe(batch.records)
        m.batch_bytes.labels(batch.topic).observe(batch.nbytes)
        if error is None:
            self._last_ack = time.monotonic()
        else:
            self._last_failure = time.monotonic()
            m.broker_errors.labels(type(error).__name__).inc()
            log.warning("batch failed", extra={"topic": batch.topic, "records": batch.records, "error": repr(error)})
            if isinstance(error, OutcomeUnknownError):
                error = ProduceFailedError(
                    "the connection to Kafka broke before it confirmed the reports; they may be stored once, "
                    "and were not sent again: retry to be sure"
                )
        if batch.deadline is not None:
            batch.deadline.cancel()
        self._release(batch.nbytes)
        if not batch.future.done():
            batch.future.set_result(error)


class PerReportProducer(_BaseProducer):
    """The plain approach, kept only as a perf reference: ``send()`` per report, then gather."""

    async def submit(
        self, topic: str, records: Sequence[Record], headers: Headers, timestamp_ms: int
    ) -> list[Delivery]:
        """``send()`` each record (aiokafka batches them itself) and gather the acks into one future."""
        size = self._admit(records, headers)
        partitions = self._partitions(topic)
        self._inflight += size
        sends = []
        try:
            for key, value in records:
                sends.append(
                    await self._producer.send(
                        topic,
                        value,
                        key=key,
                        partition=partition_for(key, partitions),
                        timestamp_ms=timestamp_ms,
                        headers=headers,
                    )
                )
        except KafkaError as exc:
            for f in sends:
                f.cancel()
            self._inflight -= size
            raise UnavailableError(f"Kafka refused the records: {exc!r}") from exc
        loop = asyncio.get_running_loop()
        delivery: Delivery = loop.create_future()
        self._track(delivery)
        timer = loop.call_later(self._produce_timeout, self._expire, delivery)
        gathered = asyncio.gather(*sends, return_exceptions=True)
        gathered.add_done_callback(functools.partial(self._on_gathered, delivery, size, timer))
        return [delivery]

    def _on_gathered(
        self, delivery: Delivery, size: int, timer: asyncio.TimerHandle, gathered: asyncio.Future[list[Any]]
    ) -> None:
        timer.cancel()
        error: BaseException | None = None
        if gathered.cancelled():
            error = BrokerUnavailableError("produce cancelled")
        else:
            error = next((r for r in gathered.result() if isinstance(r, BaseException)), None)
        if error is None:
            self._last_ack = time.monotonic()
        else:
            self._last_failure = time.monotonic()
            self._metrics.broker_errors.labels(type(error).__name__).inc()
        self._release(size)
        if not delivery.done():
            delivery.set_result(error)


def create_producer(settings: GatewaySettings, metrics: GatewayMetrics, *, idempotence: bool) -> ReportProducer:
    """The producer for ``settings.produce_mode`` (``batched``, or the ``per-report`` reference)."""
    if settings.produce_mode == "per-report":
        return PerReportProducer(settings, metrics, idempotence=idempotence)
    return BatchingProducer(settings, metrics, idempotence=idempotence)
