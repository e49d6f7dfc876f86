"""aiokafka's sender, made to never store a batch twice when the producer is not idempotent.

aiokafka re-sends a batch whenever its produce request failed with a retriable error. With an
idempotent producer that is safe: the broker drops a copy by its sequence number. Without one
(the embedded broker grants no producer id; ``--idempotence off``) a re-send after the request
*left* can store the batch twice: the connection broke after the broker appended it, and the
answer was lost. So here, for a producer that is not idempotent, a batch is re-sent only when
it certainly was not stored:

1. the request never left: no connection to the leader (``NodeNotReadyError``), or the
   connection was found closed on writing (uvloop raises ``RuntimeError`` there; aiokafka lets
   that through and its sender task dies, failing every later batch: it is caught here);
2. the broker answered with an error that rejects the batch before appending it
   (not the leader, unknown partition, not enough replicas: :data:`_NOT_STORED`).

Anything else after the request left (connection lost or timed out while waiting for the
answer, a broker timeout, "appended but not enough replicas") fails the batch with
:class:`OutcomeUnknownError` or the broker's error, and the gateway answers 503: the records
may be in Kafka once, and the client decides whether to send them again. An idempotent producer
keeps aiokafka's retries (the broker deduplicates), with the ``RuntimeError`` fix of step 1.

An unexpected error while sending one request fails that request's batches (logged) instead
of killing the sender task for good. :func:`install_sender` puts this sender into an
``AIOKafkaProducer`` before it starts.

A batch is closed the moment the sender takes it. aiokafka gives an idempotent batch its sequence
numbers (as many as it holds records) when it takes it, but builds the request a loop turn later;
the gateway appends to a batch until it is closed, so records appended in between were sent under
sequence numbers the next batch also got, and the broker refused every later batch of that
partition with ``OutOfOrderSequenceNumber`` (seen on Apache Kafka under concurrent requests).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from aiokafka.errors import (  # type: ignore[import-untyped]
    CorruptRecordException,
    KafkaConnectionError,
    KafkaError,
    LeaderNotAvailableError,
    NodeNotReadyError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    UnknownTopicOrPartitionError,
)
from aiokafka.producer.message_accumulator import MessageAccumulator  # type: ignore[import-untyped]
from aiokafka.producer.sender import Sender, SendProduceReqHandler  # type: ignore[import-untyped]

from footfall.errors import BrokerOutcomeUnknownError

__all__ = ["OutcomeUnknownError", "install_sender"]

log = logging.getLogger(__name__)

#: Broker errors that reject a batch before it is appended to the log: a re-send cannot duplicate.
_NOT_STORED: Final = frozenset(
    {
        CorruptRecordException,
        LeaderNotAvailableError,
        NotEnoughReplicasError,
        NotLeaderForPartitionError,
        UnknownTopicOrPartitionError,
    }
)


class OutcomeUnknownError(KafkaError):  # type: ignore[misc]
    """The produce request was sent and its answer never came: the batch may be stored (once).

    A ``KafkaError`` because aiokafka's batch machinery carries it; translated to
    :class:`~footfall.errors.BrokerOutcomeUnknownError` by ``footfall.kafka.broker_error``.
    """

    retriable = False
    footfall_error = BrokerOutcomeUnknownError


class _ProduceHandler(SendProduceReqHandler):  # type: ignore[misc]
    """One produce request to one broker; re-sends only what is safe (see the module docstring)."""

    def __init__(self, sender: Any, batches: dict[Any, Any]) -> None:
        super().__init__(sender, batches)
        # aiokafka's own test for idempotence (or transactions): a producer id and sequence numbers.
        self._idempotent = sender._txn_manager is not None

    async def do(self, node_id: int) -> None:
        request = self.create_request()
        try:
            response = await self._client.send(node_id, request)
        except NodeNotReadyError as err:  # 1. no connection: the request never left
            self._retry_or_fail(err, sent=False)
        except KafkaError as err:  # (a RuntimeError too: caught before the bare one below)
            log.warning("produce request failed", extra={"node": node_id, "error": repr(err)})
            if getattr(err, "invalid_metadata", False):
                self._client.force_metadata_update()
            self._retry_or_fail(err, sent=True)
        except RuntimeError as err:  # 1. uvloop: the transport was closed under the write
            closed = KafkaConnectionError(f"connection closed before the request was sent: {err}")
            self._retry_or_fail(closed, sent=False)
        except Exception as err:  # one request's bug must not kill the sender task (it logs and decides)
            log.exception("unexpected error sending a produce request; its batches fail")
            self._fail_all(KafkaError(f"unexpected error sending the batch: {err!r}"))
        else:
            if request.required_acks == 0:
                for batch in self._batches.values():
                    batch.done_noack()
            else:
                self.handle_response(response)  # 2. per partition: _can_retry decides

        if self._to_reenqueue:
            await asyncio.sleep(self._default_backoff)
            for batch in self._to_reenqueue:
                self._sender._message_accumulator.reenqueue(batch)
            await self._client._maybe_wait_metadata()

    def _retry_or_fail(self, err: Exception, *, sent: bool) -> None:
        for batch in self._batches.values():
            if sent and not self._idempotent and getattr(err, "retriable", False):
                batch.failure(exception=OutcomeUnknownError(f"no answer to the produce request ({err!r})"))
            elif super()._can_retry(err, batch):
                self._to_reenqueue.append(batch)
            else:
                batch.failure(exception=err)

    def _fail_all(self, err: Exception) -> None:
        for batch in self._batches.values():
            batch.failure(exception=err)

    def _can_retry(self, error: Exception, batch: Any) -> bool:
        """For an error the broker answered: re-send only what it did not append (unless idempotent)."""
        if not self._idempotent and type(error) not in _NOT_STORED:
            return False
        return bool(super()._can_retry(error, batch))


class _Sender(Sender):  # type: ignore[misc]
    async def _send_produce_req(self, node_id: int, batches: dict[Any, Any]) -> None:
        try:
            await _ProduceHandler(self, batches).do(node_id)
        finally:  # aiokafka leaves the node muted for good when the handler raises
            self._in_flight.discard(node_id)
            for tp in batches:
                self._muted_partitions.discard(tp)


class _ClosingAccumulator(MessageAccumulator):  # type: ignore[misc]
    def _pop_batch(self, tp: Any) -> Any:
        # Closed before aiokafka counts its records for the sequence numbers: what is counted is sent.
        self._batches[tp][0]._builder.close()
        return super()._pop_batch(tp)


def install_sender(producer: Any) -> None:
    """Replace a not yet started ``AIOKafkaProducer``'s sender with :class:`_Sender` (same settings),
    and make its accumulator close each batch as the sender takes it."""
    old = producer._sender
    if old.sender_task is not None:
        raise RuntimeError("install the sender before the producer starts")
    accumulator = producer._message_accumulator
    if type(accumulator) is not MessageAccumulator:
        raise RuntimeError(f"unexpected accumulator {type(accumulator).__name__}: aiokafka changed")
    accumulator.__class__ = _ClosingAccumulator  # the producer and its sender already hold this object
    producer._sender = _Sender(
        old.client,
        acks=old._acks,
        txn_manager=old._txn_manager,
        message_accumulator=old._message_accumulator,
        retry_backoff_ms=old._retry_backoff * 1000,
        request_timeout_ms=old._request_timeout_ms,
    )
