"""The gateway's aiokafka sender: which failed produce requests it re-sends, which it fails, and that a batch
the sender took takes no more records (unit, no broker)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    NodeNotReadyError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
)
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import TopicPartition

from gateway.sender import OutcomeUnknownError, _ProduceHandler, install_sender

TP = TopicPartition("visit", 0)


@dataclass
class FakeBatch:
    """The part of aiokafka's MessageBatch the handler touches."""

    failed: BaseException | None = None
    done_offset: int | None = None

    def get_data_buffer(self) -> bytes:
        return b""

    def expired(self) -> bool:
        return False

    def failure(self, exception: BaseException) -> None:
        self.failed = exception

    def done(self, offset: int, timestamp: int | None = None, log_start_offset: int | None = None) -> None:
        self.done_offset = offset


@dataclass
class FakeAccumulator:
    reenqueued: list[FakeBatch] = field(default_factory=list)

    def reenqueue(self, batch: FakeBatch) -> None:
        self.reenqueued.append(batch)


class FakeClient:
    def __init__(self, outcome: BaseException | Any) -> None:
        self.outcome = outcome

    async def send(self, node_id: int, request: Any) -> Any:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def force_metadata_update(self) -> None:
        pass

    async def _maybe_wait_metadata(self) -> None:
        pass


@dataclass
class FakeSender:
    client: FakeClient
    _txn_manager: object | None
    _message_accumulator: FakeAccumulator = field(default_factory=FakeAccumulator)
    _retry_backoff: float = 0.0
    _acks: int = -1
    _request_timeout_ms: int = 1000


@dataclass
class ProduceResponse:
    """A v7 produce response for one partition."""

    error_code: int
    API_VERSION: int = 7

    @property
    def topics(self) -> list[Any]:
        return [(TP.topic, [(TP.partition, self.error_code, 42, -1, 0)])]


@dataclass
class FakeTxnManager:
    """An idempotent producer's state (no transactions)."""

    transactional_id: str | None = None


def run(outcome: BaseException | Any, *, idempotent: bool) -> tuple[FakeBatch, FakeSender]:
    sender = FakeSender(FakeClient(outcome), FakeTxnManager() if idempotent else None)
    batch = FakeBatch()
    asyncio.run(_ProduceHandler(sender, {TP: batch}).do(0))
    return batch, sender


@pytest.mark.parametrize(
    "error",
    [KafkaConnectionError("Connection at 127.0.0.1:9092 closed"), RequestTimedOutError()],
    ids=["connection-lost", "client-timeout"],
)
def test_no_answer_fails_the_batch_unless_idempotent(error: BaseException) -> None:
    batch, sender = run(error, idempotent=False)
    assert isinstance(batch.failed, OutcomeUnknownError)
    assert sender._message_accumulator.reenqueued == []

    batch, sender = run(error, idempotent=True)  # the broker drops a re-sent copy by its sequence number
    assert batch.failed is None
    assert sender._message_accumulator.reenqueued == [batch]


@pytest.mark.parametrize("idempotent", [False, True])
@pytest.mark.parametrize(
    "error",
    [
        NodeNotReadyError("no connection"),
        RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed"),
    ],
    ids=["not-connected", "transport-closed-on-write"],
)
def test_a_request_that_never_left_is_sent_again(error: BaseException, idempotent: bool) -> None:
    batch, sender = run(error, idempotent=idempotent)
    assert batch.failed is None
    assert sender._message_accumulator.reenqueued == [batch]


def test_a_broker_rejection_before_append_is_sent_again() -> None:
    batch, sender = run(ProduceResponse(NotLeaderForPartitionError.errno), idempotent=False)
    assert batch.failed is None
    assert sender._message_accumulator.reenqueued == [batch]


def test_a_broker_timeout_may_have_appended_so_it_fails_unless_idempotent() -> None:
    batch, sender = run(ProduceResponse(RequestTimedOutError.errno), idempotent=False)
    assert isinstance(batch.failed, RequestTimedOutError)
    assert sender._message_accumulator.reenqueued == []

    batch, sender = run(ProduceResponse(RequestTimedOutError.errno), idempotent=True)
    assert sender._message_accumulator.reenqueued == [batch]


def test_an_acknowledged_batch_is_done() -> None:
    batch, _ = run(ProduceResponse(0), idempotent=False)
    assert batch.done_offset == 42 and batch.failed is None


def test_an_unexpected_error_fails_the_batches_instead_of_escaping() -> None:
    batch, _ = run(ValueError("a bug"), idempotent=False)
    assert batch.failed is not None and "a bug" in str(batch.failed)


async def test_a_batch_the_sender_took_takes_no_more_records_so_its_sequence_numbers_hold() -> None:
    # The gateway appends to a batch it handed to aiokafka until the batch is closed. aiokafka
    # counts an idempotent batch's records for its sequence numbers when the sender takes it, and
    # builds the request a loop turn later: a record appended in between went out under a sequence
    # number the next batch got too, and Apache Kafka refused that partition from then on.
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", enable_idempotence=True, acks="all")
    install_sender(producer)
    producer._txn_manager.set_pid_and_epoch(7, 0)  # what InitProducerId would have granted
    accumulator = producer._message_accumulator
    builder = producer.create_batch()
    for i in range(3):
        assert builder.append(timestamp=None, key=b"u", value=b"r%d" % i) is not None
    await accumulator.add_batch(builder, TP, timeout=1.0)

    taken = accumulator._pop_batch(TP)  # what the sender's drain does
    assert builder.append(timestamp=None, key=b"u", value=b"late") is None, "a taken batch took another record"
    sent = DefaultRecordBatch(bytes(taken.get_data_buffer()))
    assert (sent.base_sequence, len(list(sent))) == (0, 3)
    assert producer._txn_manager.sequence_number(TP) == 3, "the next batch starts after the records sent"
