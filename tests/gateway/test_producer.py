"""BatchingProducer against the real broker: shared batches, cancellation, accounting, partitioning."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from footfall.kafka import partition_for
from gateway.batching import BatchingProducer
from gateway.errors import GatewayError, SaturatedError
from gateway.metrics import GatewayMetrics
from gateway.producer import Record
from gateway.settings import GatewaySettings
from perf.references.per_report import PerReportProducer

pytestmark = pytest.mark.integration

HEADERS = [("ff-type", b"visit"), ("ff-schema", b"1"), ("ff-received-ms", b"1"), ("ff-request-id", b"r")]


def records_for(user: int, n: int = 12) -> list[Record]:
    key = str(uuid.UUID(int=user + 1)).encode()
    return [Record(key, b'{"i":%d,"u":%d}' % (i, user)) for i in range(n)]


async def make(
    broker: str, topic_factory: Any, cls: type = BatchingProducer, *, idempotence: bool = False, **overrides: Any
) -> tuple[Any, str]:
    visit = await topic_factory("visit", partitions=4)
    activity = await topic_factory("activity", partitions=4)
    settings = GatewaySettings(brokers=broker, visit_topic=visit, activity_topic=activity, **overrides)
    producer = cls(settings, GatewayMetrics(), idempotence=idempotence)
    await producer.start()
    return producer, visit


async def test_requests_in_one_tick_share_one_batch_per_partition(
    broker: str, topic_factory: Any, consume: Any
) -> None:
    producer, topic = await make(broker, topic_factory)
    try:
        requests = [records_for(u) for u in range(50)]
        # submit() never yields, so all 50 requests land before any batch is handed to aiokafka.
        deliveries = [await producer.submit(topic, recs, HEADERS, 1_700_000_000_000) for recs in requests]
        partitions = {partition_for(recs[0].key, 4) for recs in requests}
        futures = {id(f): f for ds in deliveries for f in ds}
        assert len(futures) == len(partitions)
        results = await asyncio.gather(*futures.values())
        assert results == [None] * len(futures)
        assert producer.inflight_bytes == 0
        hist = producer._metrics.batch_records.labels(topic)
        assert sum(hist.counts) == len(partitions)
        assert hist.sum == 600
    finally:
        await producer.stop(5)
    got = await consume(topic, 600)
    assert len(got) == 600
    for rec in got:
        assert rec.partition == partition_for(rec.key, 4)
        assert rec.timestamp == 1_700_000_000_000
        assert [(k, v) for k, v in rec.headers] == HEADERS
    # Per key, order is kept.
    by_key: dict[bytes, list[bytes]] = {}
    for rec in sorted(got, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(rec.key, []).append(rec.value)
    for recs in requests:
        assert by_key[recs[0].key] == [r.value for r in recs]


async def test_a_cancelled_request_does_not_cancel_its_batch(broker: str, topic_factory: Any, consume: Any) -> None:
    producer, topic = await make(broker, topic_factory, linger_ms=200)
    try:
        first = await producer.submit(topic, records_for(1), HEADERS, 1)
        second = await producer.submit(topic, records_for(1), HEADERS, 1)
        assert first == second  # same user, same open batch

        async def request() -> None:
            await asyncio.wait(first)

        task = asyncio.ensure_future(request())
        await asyncio.sleep(0.01)
        task.cancel()  # the client went away
        assert (await asyncio.gather(*second)) == [None]
        assert producer.inflight_bytes == 0
    finally:
        await producer.stop(5)
    assert len(await consume(topic, 24)) == 24


async def test_in_flight_cap_refuses_whole_requests(broker: str, topic_factory: Any) -> None:
    producer, topic = await make(broker, topic_factory, max_inflight_bytes=4096, linger_ms=300)
    try:
        accepted = []
        with pytest.raises(SaturatedError):
            for u in range(100):
                accepted.append(await producer.submit(topic, records_for(u), HEADERS, 1))
        assert 0 < len(accepted) < 100
        assert 0 < producer.inflight_bytes <= 4096
        assert not producer.ready()
        await asyncio.gather(*(f for ds in accepted for f in ds))
        assert producer.inflight_bytes == 0
    finally:
        await producer.stop(5)


async def test_batches_split_at_batch_size(broker: str, topic_factory: Any, consume: Any) -> None:
    producer, topic = await make(broker, topic_factory, batch_size=1024)
    try:
        deliveries = await producer.submit(topic, records_for(7, n=200), HEADERS, 1)
        assert len(deliveries) > 5
        assert set(await asyncio.gather(*deliveries)) == {None}
    finally:
        await producer.stop(5)
    got = sorted(await consume(topic, 200), key=lambda r: r.offset)
    assert [r.value for r in got] == [r.value for r in records_for(7, n=200)]


async def test_per_report_reference_mode(broker: str, topic_factory: Any, consume: Any) -> None:
    producer, topic = await make(broker, topic_factory, cls=PerReportProducer)
    try:
        deliveries = await producer.submit(topic, records_for(3), HEADERS, 5)
        assert (await asyncio.gather(*deliveries)) == [None]
        assert producer.inflight_bytes == 0
    finally:
        await producer.stop(5)
    assert len(await consume(topic, 12)) == 12


async def test_deadline_resolves_requests_and_closes_the_batch(own_broker: Any) -> None:
    import os
    import signal
    import time

    from footfall.kafka import ensure_topics
    from gateway.errors import ProduceTimeoutError

    await ensure_topics(own_broker.bootstrap, ["v", "a"], 4, 1)
    settings = GatewaySettings(
        brokers=own_broker.bootstrap,
        visit_topic="v",
        activity_topic="a",
        produce_timeout_ms=500,
        request_timeout_ms=1500,
    )
    producer = BatchingProducer(settings, GatewayMetrics(), idempotence=False)
    await producer.start()
    try:
        assert (await asyncio.gather(*await producer.submit("v", records_for(1), HEADERS, 1))) == [None]
        os.kill(own_broker.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            first = await producer.submit("v", records_for(1), HEADERS, 1)
            (error,) = await asyncio.gather(*first)
            assert isinstance(error, ProduceTimeoutError)
            assert time.monotonic() - started < 2.0  # 0.5 s deadline; slack for a loaded machine
            second = await producer.submit("v", records_for(1), HEADERS, 1)
            assert second[0] is not first[0]  # a timed-out batch takes no more records
            assert producer.inflight_bytes > 0  # still accounted: aiokafka has not settled it
        finally:
            os.kill(own_broker.pid, signal.SIGCONT)
        deadline = time.monotonic() + 20
        while producer.inflight_bytes and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert producer.inflight_bytes == 0
    finally:
        await producer.stop(5)


async def test_a_producer_whose_sender_died_is_replaced(
    broker: str, topic_factory: Any, consume: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """aiokafka's sender task dies (as it did on uvloop's closed-transport RuntimeError): the gateway
    says so (not ready, an ERROR line) and serves again on a new aiokafka producer within seconds."""
    import time

    producer, topic = await make(broker, topic_factory)
    try:
        assert (await asyncio.gather(*await producer.submit(topic, records_for(1), HEADERS, 1))) == [None]
        dead = producer._producer

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("injected: a bug in the sender routine")

        dead._sender._message_accumulator.drain_by_nodes = broken
        (error,) = await asyncio.gather(*await producer.submit(topic, records_for(2), HEADERS, 1))
        assert error is not None  # the dying sender failed the batch it held
        assert not producer.ready()

        deadline = time.monotonic() + 10
        results: list[Any] = []
        while time.monotonic() < deadline:
            try:
                results = await asyncio.gather(*await producer.submit(topic, records_for(3), HEADERS, 1))
            except GatewayError:  # refused while the producer is being replaced
                results = []
            if results == [None]:
                break
            await asyncio.sleep(0.1)
        assert results == [None], "the gateway did not serve again after its sender died"
        assert producer._producer is not dead
        assert producer.sender_alive
        assert "Kafka producer's sender task died; replacing the producer" in caplog.text
        assert producer._metrics.producer_replacements.labels().value == 1
    finally:
        await producer.stop(5)
    got = await consume(topic, 24)
    assert sorted(r.value for r in got) == sorted(r.value for r in records_for(1) + records_for(3))


@pytest.mark.kafka
@pytest.mark.parametrize("cls", [BatchingProducer, PerReportProducer])
async def test_a_producer_whose_sequence_numbers_kafka_refused_is_replaced(
    broker: str, topic_factory: Any, consume: Any, caplog: pytest.LogCaptureFixture, cls: type
) -> None:
    """aiokafka never starts a partition's sequence numbers over: once Apache Kafka refused them
    (a batch's numbers given out and the batch never stored), every later batch of that partition
    would fail. The gateway replaces the producer; the new producer id starts them at 0."""
    import time

    from aiokafka.structs import TopicPartition

    producer, topic = await make(broker, topic_factory, cls, idempotence=True)
    try:
        assert (await asyncio.gather(*await producer.submit(topic, records_for(1), HEADERS, 1))) == [None]
        refused = producer._producer
        tp = TopicPartition(topic, partition_for(records_for(1)[0].key, 4))
        refused._txn_manager.increment_sequence_number(tp, 5)  # 5 numbers given to records never stored

        (error,) = await asyncio.gather(*await producer.submit(topic, records_for(1, 2), HEADERS, 1))
        assert error is not None and "OutOfOrderSequenceNumber" in str(error)
        deadline = time.monotonic() + 10
        results: list[Any] = []
        while time.monotonic() < deadline and results != [None]:
            await asyncio.sleep(0.1)
            results = await asyncio.gather(*await producer.submit(topic, records_for(1, 3), HEADERS, 1))
        assert results == [None], "the partition stayed refused"
        assert producer._producer is not refused
        assert "Kafka refused the producer's sequence numbers; replacing it" in caplog.text
        assert producer._metrics.producer_replacements.labels().value == 1
    finally:
        await producer.stop(5)
    got = [r.value for r in await consume(topic, 15)]
    assert sorted(got) == sorted(r.value for r in records_for(1) + records_for(1, 3))


class _InitProducerIdAnswers:
    """Stands in for AIOKafkaClient: answers InitProducerId with the given error codes in turn."""

    def __init__(self, codes: list[int]) -> None:
        self.codes = codes
        self.asked = 0

    def __call__(self, **_: object) -> _InitProducerIdAnswers:
        return self

    async def bootstrap(self) -> None:
        return None

    def get_random_node(self) -> int:
        return 1

    async def send(self, node: int, request: object) -> Any:
        code = self.codes[min(self.asked, len(self.codes) - 1)]
        self.asked += 1
        return type("Response", (), {"error_code": code})()

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("codes", "supported", "asked"),
    [
        ([0], True, 1),
        ([-1], False, 1),  # the embedded broker: no idempotence, decided at once
        ([14, 14, 0], True, 3),  # a fresh Kafka cluster still loading its coordinator
        ([15, 0], True, 2),
    ],
)
async def test_idempotence_probe_asks_again_on_retriable_answers(
    monkeypatch: pytest.MonkeyPatch, codes: list[int], supported: bool, asked: int
) -> None:
    import footfall.kafka as kafka_module

    answers = _InitProducerIdAnswers(codes)
    monkeypatch.setattr(kafka_module, "AIOKafkaClient", answers)
    assert await kafka_module.probe_idempotence("127.0.0.1:9", within=5.0) is supported
    assert answers.asked == asked


async def test_idempotence_probe_gives_up_when_the_coordinator_never_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    import footfall.kafka as kafka_module

    monkeypatch.setattr(kafka_module, "AIOKafkaClient", _InitProducerIdAnswers([14]))
    assert await kafka_module.probe_idempotence("127.0.0.1:9", within=0.5) is False
