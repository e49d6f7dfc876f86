"""The ingest steps one by one (no app, no broker), and the one translation of Kafka errors into 503s."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
from aiokafka.errors import (  # type: ignore[import-untyped]
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    UnknownTopicOrPartitionError,
)
from sanic.compat import Header

from footfall.errors import BrokerError, BrokerOutcomeUnknownError, BrokerUnavailableError, FootfallError
from footfall.kafka import broker_error, kafka_answers, kafka_answers_async, kafka_error_name, kafka_errors
from footfall.reports import ReportType, encode_report
from gateway.body import BodyLimits
from gateway.errors import (
    GatewayError,
    ProduceFailedError,
    ProduceTimeoutError,
    UnauthorizedError,
    UnavailableError,
    UnsupportedMediaError,
    produce_failure,
)
from gateway.ingest import (
    authenticate,
    check_content,
    decode,
    encode_records,
    kafka_headers,
    produce,
    wait_for_acks,
)
from gateway.producer import Delivery
from gateway.sender import OutcomeUnknownError
from tests.gateway.conftest import JSON_GZIP, original_body

LIMITS = BodyLimits(max_body_bytes=1 << 20, max_decompressed_bytes=1 << 22, max_expansion_ratio=200)


def test_steps_1_to_5_turn_a_request_into_keyed_records() -> None:
    body, reports = original_body()
    authenticate(Header({"authorization": "Bearer k2"}), [b"k1", b"k2"])
    authenticate(Header({"x-api-key": "k1"}), [b"k1", b"k2"])
    coding = check_content(Header(JSON_GZIP))
    assert coding == "gzip"
    decoded = decode(ReportType.VISIT, body, coding, LIMITS, 20)
    records = encode_records(decoded)
    assert [(r.key, r.value) for r in records] == [(str(r.userId).encode(), encode_report(r)) for r in reports]
    assert kafka_headers(ReportType.VISIT, 1_700_000_000_123, "req-1") == [
        ("ff-type", b"visit"),
        ("ff-schema", b"1"),
        ("ff-received-ms", b"1700000000123"),
        ("ff-request-id", b"req-1"),
    ]


def test_each_user_keys_its_own_records() -> None:
    _, first = original_body(seed=1)
    _, second = original_body(seed=2)
    records = encode_records([*first[:2], *second[:1], *first[2:3]])
    assert [r.key for r in records] == [str(first[0].userId).encode()] * 2 + [
        str(second[0].userId).encode(),
        str(first[0].userId).encode(),
    ]


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, UnauthorizedError),
        ({"authorization": "Bearer nope"}, UnauthorizedError),
        ({"x-api-key": ""}, UnauthorizedError),
    ],
)
def test_authenticate_refuses(headers: dict[str, str], error: type[GatewayError]) -> None:
    with pytest.raises(error):
        authenticate(Header(headers), [b"k1"])


def test_check_content_refuses_other_media() -> None:
    with pytest.raises(UnsupportedMediaError):
        check_content(Header({"content-type": "text/plain"}))
    with pytest.raises(UnsupportedMediaError):
        check_content(Header({"content-type": "application/json", "content-encoding": "br"}))


async def test_produce_without_a_producer_is_a_503() -> None:
    with pytest.raises(UnavailableError) as caught:
        await produce(None, "visit", [], [], 0)
    assert caught.value.status == 503


def _resolved(result: BaseException | None) -> Delivery:
    delivery: Delivery = asyncio.get_running_loop().create_future()
    delivery.set_result(result)
    return delivery


async def test_wait_for_acks_returns_once_every_delivery_is_acked() -> None:
    pending: Delivery = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(wait_for_acks([_resolved(None), pending]))
    await asyncio.sleep(0)
    assert not waiting.done()
    pending.set_result(None)
    await waiting
    assert not pending.cancelled()


@pytest.mark.parametrize(
    ("failure", "code", "words"),
    [
        (ProduceTimeoutError("no ack within 5 s"), "produce_timeout", "no ack within 5 s"),
        (KafkaConnectionError("reset"), "produce_failed", "(KafkaConnectionError)"),
        (RuntimeError("broker said no"), "produce_failed", "(RuntimeError)"),
        (OutcomeUnknownError("no answer"), "produce_failed", "they may be stored once"),
    ],
)
async def test_a_failed_delivery_is_its_503(failure: BaseException, code: str, words: str) -> None:
    with pytest.raises(GatewayError) as caught:
        await wait_for_acks([_resolved(None), _resolved(failure)])
    assert caught.value.status == 503
    assert caught.value.code == code
    assert words in caught.value.message
    assert produce_failure(failure).code == code


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (KafkaConnectionError("reset"), BrokerUnavailableError),  # aiokafka: retriable
        (NotLeaderForPartitionError(), BrokerUnavailableError),
        (UnknownTopicOrPartitionError(), BrokerUnavailableError),  # aiokafka: retriable (metadata)
        (MessageSizeTooLargeError(), BrokerError),  # aiokafka: not retriable
        (KafkaError("generic"), BrokerError),
        (ConnectionRefusedError(), BrokerUnavailableError),
        (TimeoutError(), BrokerUnavailableError),
        (OutcomeUnknownError("no answer"), BrokerOutcomeUnknownError),  # its footfall_error
    ],
)
def test_broker_error_follows_the_failures_own_policy(failure: BaseException, expected: type[BrokerError]) -> None:
    error = broker_error(failure, "producing to visit")
    assert type(error) is expected
    assert isinstance(error, FootfallError)
    assert error.retriable is issubclass(expected, BrokerUnavailableError)
    assert error.kafka_error == type(failure).__name__ == kafka_error_name(error)
    assert str(error).startswith("producing to visit: ")
    already = BrokerUnavailableError("down")
    assert broker_error(already) is already


def test_kafka_errors_translates_with_the_cause_kept() -> None:
    cause = KafkaConnectionError("reset")
    with pytest.raises(BrokerUnavailableError) as caught, kafka_errors("cannot list topics on h:1"):
        raise cause
    assert caught.value.__cause__ is cause
    with pytest.raises(ValueError, match="a bug"), kafka_errors("anything"):
        raise ValueError("a bug")  # not the client's failure: not translated


def test_gateway_errors_are_footfall_errors() -> None:
    assert issubclass(GatewayError, FootfallError)
    assert isinstance(ProduceFailedError("x"), FootfallError)


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A TCP server that accepts and reads but never answers (what a paused broker looks like)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[:2]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


async def test_the_prober_says_no_for_a_server_that_does_not_answer(silent_server: tuple[str, int]) -> None:
    host, port = silent_server
    assert not kafka_answers(host, port, timeout=0.3)
    assert not await kafka_answers_async(host, port, within=0.3)


async def test_the_prober_says_yes_for_the_broker(broker: str) -> None:
    host, _, port = broker.rpartition(":")
    assert kafka_answers(host, int(port))
    assert await kafka_answers_async(host, int(port), within=2.0)


def test_broker_errors_are_in_words_not_reprs() -> None:
    bootstrap = KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 41169, <AddressFamily.AF_INET: 2>)]")
    message = str(broker_error(bootstrap, "cannot reach 127.0.0.1:41169"))
    assert message == "cannot reach 127.0.0.1:41169: KafkaConnectionError: no broker in the list answered"
    assert "AddressFamily" not in message and "(" not in message
    assert str(broker_error(TimeoutError())) == "TimeoutError"
    assert str(broker_error(ConnectionRefusedError(111, "Connect call failed"))) == (
        "ConnectionRefusedError: [Errno 111] Connect call failed"
    )
