"""The gateway's producer: what the HTTP layer sees of Kafka, and the aiokafka producer under it.

- :class:`ReportProducer` is the interface the HTTP layer needs (``submit``, readiness, start/stop);
  :class:`Record`, :data:`Headers` and :data:`Delivery` are what goes through it. The tests
  supply a fake that satisfies it.
- :class:`KafkaProducerBase` holds what every implementation shares: the aiokafka producer's
  life cycle (with the safe sender of :mod:`gateway.sender`), partition counts, the in-flight
  byte cap, readiness, and the broker probe. How records become batches is the subclass's:
  :class:`gateway.batching.BatchingProducer` (the gateway's), and perf's per-report reference
  (``perf/references/per_report.py``). :class:`ProducerClass` is what makes one: ``python -m gateway``
  uses BatchingProducer; ``gateway.__main__.main(argv, producer_class=...)`` runs the gateway with another.

Delivery semantics: ``submit`` returns futures that resolve to ``None`` only once the broker
acknowledged (``acks=all``) the records, or to the error (always within ``--produce-timeout-ms``).
The gateway answers 200 only when every future of the request resolved to ``None``; anything
else is a 503, and the records may or may not be in Kafka (at-least-once: a client retry can
duplicate them, never lose them).

Bounded memory: bytes of records not yet acknowledged are counted per worker;
``submit`` refuses a request with :class:`~gateway.errors.SaturatedError` when they would pass
``max_inflight_bytes``. Bytes are released when a batch is acked or fails.

Liveness: aiokafka's sender task does all the sending; if it dies, every later batch fails.
The broker probe (every 0.5 s, ``footfall.kafka.kafka_answers_async``) notices, logs an error,
turns ``/readyz`` false (``sender_alive: false``) and replaces the aiokafka producer with a new
one as soon as the broker accepts a connection; batches not yet handed over go to the new one.
An idempotent producer is replaced too when the broker refuses its sequence numbers for a
partition (``OutOfOrderSequenceNumber``, ``UnknownProducerId``): aiokafka never starts a
partition's numbers over, so every later batch of that partition would fail; a new producer id
starts them at 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Final, NamedTuple, Protocol

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber, UnknownProducerId  # type: ignore[import-untyped]

from footfall.errors import BrokerError
from footfall.kafka import kafka_answers_async, kafka_error_name, kafka_errors, parse_brokers
from gateway.errors import BrokerDownError, ProduceTimeoutError, SaturatedError, UnavailableError
from gateway.metrics import GatewayMetrics
from gateway.sender import install_sender
from gateway.settings import GatewaySettings

__all__ = ["RECORD_OVERHEAD", "Delivery", "Headers", "KafkaProducerBase", "ProducerClass", "Record", "ReportProducer"]

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
#: What a request waits on: resolves to None once acked, or to the error that failed it.
Delivery = asyncio.Future[BaseException | None]

#: Bytes a record costs beyond key, value and headers: varints, attributes, offsets/timestamp deltas
#: (a fair upper bound).
RECORD_OVERHEAD: Final = 24
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
#: Broker answers after which a producer's sequence numbers for a partition never match again.
_OUT_OF_STEP: Final = (OutOfOrderSequenceNumber, UnknownProducerId)


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


class ProducerClass(Protocol):
    """What makes a worker's producer (a :class:`KafkaProducerBase` subclass satisfies it).

    It must be importable by name: the gateway's worker processes are spawned and unpickle it.
    """

    def __call__(self, settings: GatewaySettings, metrics: GatewayMetrics, *, idempotence: bool) -> ReportProducer: ...


class KafkaProducerBase:
    """aiokafka life cycle, broker probing, partition counts and in-flight accounting.

    Subclasses implement ``submit`` with :meth:`_admit` (refuse or size a request),
    :meth:`_track`/:meth:`_release` (what :meth:`stop` waits for) and :meth:`_expire`.
    """

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
        self._out_of_step: BaseException | None = None  # set: replace the producer at the next probe
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
        self._producer = await self._start_kafka_producer()
        self._settled = asyncio.Event()
        self._settled.set()
        self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())
        log.info(
            "producer started",
            extra={
                "partitions": self._partition_counts,
                "idempotence": self._idempotence,
                "producer": type(self).__name__,
            },
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
            with kafka_errors(f"cannot start the Kafka producer on {s.brokers}"):
                await producer.start()
                for topic in (s.visit_topic, s.activity_topic):
                    self._partition_counts[topic] = len(await producer.partitions_for(topic))
        except BaseException:  # cancelled, or the broker refused: close what was opened, then re-raise
            with contextlib.suppress(KafkaError):
                await producer.stop()
            raise
        return producer

    def _sender_died(self) -> BaseException | None:
        """The exception aiokafka's sender task ended with, if it is no longer running."""
        sender = self._producer._sender if self._producer is not None else None
        task = sender.sender_task if sender is not None else None
        if task is None or not task.done():
            return None
        return task.exception() if not task.cancelled() else asyncio.CancelledError()

    def _batch_failed(self, error: BaseException, producer: Any) -> None:
        """A batch sent with ``producer`` failed: /readyz holds off, the metric counts it, and an answer
        that put the producer's sequence numbers out of step with the broker has it replaced."""
        self._last_failure = time.monotonic()
        self._metrics.broker_errors.labels(kafka_error_name(error)).inc()
        # Only the current producer's: the batches a replaced one still held fail the same way.
        if isinstance(error, _OUT_OF_STEP) and producer is self._producer and self._out_of_step is None:
            self._out_of_step = error
            log.error("Kafka refused the producer's sequence numbers; replacing it", extra={"error": repr(error)})

    async def _replace_producer(self, error: BaseException, *, sender_died: bool) -> None:
        """Swap the aiokafka producer for a new one (retried at each probe while the broker refuses):
        its sender task died, or the broker refused its sequence numbers."""
        if sender_died and self._sender_alive:
            self._sender_alive = False
            self._metrics.broker_errors.labels("sender_died").inc()
            log.error("Kafka producer's sender task died; replacing the producer", extra={"error": repr(error)})
        try:
            within = self._settings.request_timeout_ms / 1000
            producer = await asyncio.wait_for(self._start_kafka_producer(), timeout=within)
        except (BrokerError, TimeoutError) as exc:
            log.warning("producer not replaced yet; retrying", extra={"error": repr(exc)})
            return
        dead, self._producer = self._producer, producer
        self._sender_alive = True
        self._out_of_step = None
        self._metrics.producer_replacements.inc()
        log.warning("producer replaced", extra={"brokers": self._settings.brokers})
        stopping = asyncio.get_running_loop().create_task(self._stop_dead(dead))
        self._retired.add(stopping)
        stopping.add_done_callback(self._retired.discard)

    @staticmethod
    async def _stop_dead(producer: Any) -> None:
        # A dead sender already failed every batch it held; a live one (sequence numbers out of step)
        # delivers what it still holds, or fails it.
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
                if await kafka_answers_async(host, port, _PROBE_TIMEOUT):
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
            if not self._stopping:
                if (died := self._sender_died()) is not None:
                    await self._replace_producer(died, sender_died=True)
                elif self._out_of_step is not None:
                    await self._replace_producer(self._out_of_step, sender_died=False)
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
        per_record = RECORD_OVERHEAD + sum([len(k) + len(v) for k, v in headers])
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
