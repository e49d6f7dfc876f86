"""Log bounds Kafka does not give on assignment pause only that partition; the worker goes on.

On Apache Kafka a partition's leader can die or freeze while the sink recovers the partitions
of a rebalance (scenario f of tests/kafka/test_cluster_faults.py): ListOffsets then fails after
the client's request timeout (``KafkaTimeoutError: Failed to get offsets by times in 40000 ms``
for a frozen leader). That used to stop the worker, whose restart rebalanced the group into the
same failover. One layer here: the group worker on a consumer that stands in for Kafka.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiokafka.errors import KafkaTimeoutError  # type: ignore[import-untyped]

from sink.checkpoint import Checkpoint, CheckpointStore
from sink.consumer import TopicPartition
from sink.instruments import SinkMetrics
from sink.settings import SinkSettings
from sink.side_topics import SideProducer
from sink.worker import GroupWorker
from tests.sink.support import StandInConsumer

_SILENT = TopicPartition("visit", 0)  # its leader does not answer at first
_FINE = TopicPartition("visit", 1)


class _FailoverConsumer(StandInConsumer):
    """The assignment path's consumer: ``visit[0]``'s log bounds fail ``failures`` times, then answer."""

    def __init__(self, failures: int, end: int = 50) -> None:
        super().__init__()
        self.failures = failures
        self.end = end

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        if _SILENT in tps and self.failures > 0:
            self.failures -= 1
            raise KafkaTimeoutError("Failed to get offsets by times in 40000 ms")
        return dict.fromkeys(tps, 0)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.end)


def _worker(record_dir: Path, consumer: _FailoverConsumer, metrics: SinkMetrics) -> GroupWorker:
    settings = SinkSettings(groups=["g:visit"], record_directory=str(record_dir))
    worker = GroupWorker(
        settings, "g", ["visit"], side=SideProducer(settings.brokers), metrics=metrics, stop=asyncio.Event()
    )
    worker.consumer = consumer  # type: ignore[assignment]
    return worker


async def test_unanswered_log_bounds_pause_the_partition_and_are_asked_again(
    record_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(record_dir)
    store.save("visit", 0, Checkpoint(offset=19))
    store.save("visit", 1, Checkpoint(offset=29))
    metrics = SinkMetrics()
    consumer = _FailoverConsumer(failures=2)
    worker = _worker(record_dir, consumer, metrics)

    with caplog.at_level(logging.WARNING, logger="sink.recovery"):
        await worker.on_assigned([_SILENT, _FINE])
    # The worker does not stop; the other partition is consumed after its checkpoint.
    assert worker._fatal is None, worker._fatal
    assert not worker.stop_event.is_set()
    assert list(worker.writers) == [_FINE] and consumer.seeks == [(_FINE, 30)]
    # The silent one waits, paused, its lock kept (the group gave it to this worker); no bad checkpoint.
    assert _SILENT in worker.recovery.bad and consumer.is_paused(_SILENT)
    assert _SILENT in worker.locks.held
    assert metrics.bad_checkpoints.labels("visit").value == 0
    warned = [r for r in caplog.records if "log bounds" in r.getMessage()]
    assert len(warned) == 1 and "KafkaTimeoutError" in warned[0].error  # type: ignore[attr-defined]

    # Asked again when due: still silent once (backoff grows), then answered: recovered and resumed.
    for attempt in (2, 3):
        worker.recovery.bad[_SILENT] = worker.recovery.bad[_SILENT]._replace(due=0.0)
        await worker._retry_bad_checkpoints()
        if attempt == 2:
            assert worker.recovery.bad[_SILENT].attempt == 2 and _SILENT not in worker.writers
    assert _SILENT in worker.writers and _SILENT not in worker.recovery.bad
    assert not consumer.is_paused(_SILENT)
    assert consumer.seeks[-1] == (_SILENT, 20)
    assert metrics.bad_checkpoints.labels("visit").value == 0
    for tp in list(worker.writers):
        worker._drop(tp)


async def test_revoked_while_waiting_for_log_bounds_lets_go(record_dir: Path) -> None:
    metrics = SinkMetrics()
    consumer = _FailoverConsumer(failures=100)
    worker = _worker(record_dir, consumer, metrics)
    await worker.on_assigned([_SILENT])
    assert _SILENT in worker.recovery.bad and _SILENT in worker.locks.held
    await worker.on_revoked([_SILENT])
    assert _SILENT not in worker.recovery.bad and _SILENT not in worker.locks.held
    assert metrics.bad_checkpoints.labels("visit").value == 0


class _HungLeaderConsumer(_FailoverConsumer):
    """``visit[0]``'s ListOffsets never answers (a frozen leader: the request hangs)."""

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        if _SILENT in tps:
            await asyncio.Event().wait()
        return await super().beginning_offsets(tps)


async def test_the_rebalance_callback_gives_kafka_a_third_of_the_session(record_dir: Path) -> None:
    """aiokafka sends no heartbeat while on_assigned runs: waiting a session there put the member out of the group."""
    consumer = _HungLeaderConsumer(failures=0)
    settings = SinkSettings(groups=["g:visit"], record_directory=str(record_dir), session_timeout=3)
    worker = GroupWorker(
        settings, "g", ["visit"], side=SideProducer(settings.brokers), metrics=SinkMetrics(), stop=asyncio.Event()
    )
    worker.consumer = consumer  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await worker.on_assigned([_SILENT, _FINE])
    assert loop.time() - started < 2.0  # 1 s of the 3 s session, not the 10 s an attempt may take later
    assert worker._fatal is None, worker._fatal
    # Both wait for the worker's loop: the hung one, and the one the budget had no time left for.
    assert set(worker.recovery.bad) == {_SILENT, _FINE} and consumer.paused == {_SILENT, _FINE}
    worker.recovery.bad[_FINE] = worker.recovery.bad[_FINE]._replace(due=0.0)
    worker.recovery.bad[_SILENT] = worker.recovery.bad[_SILENT]._replace(due=float("inf"))  # still frozen
    await worker._retry_bad_checkpoints()
    assert _FINE in worker.writers and consumer.seeks == [(_FINE, 0)]
    await worker.on_revoked([_SILENT, _FINE])
