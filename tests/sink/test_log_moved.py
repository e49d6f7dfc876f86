"""A log that starts over while the sink holds the partition, without a rebalance.

A topic deleted and created again between two of the group member's metadata looks keeps its
assignment; the next fetch from the sink's position is out of the new, shorter log's range, and
aiokafka resets the position to the log's start by itself. The records from there on are *not*
already landed (they are the new log's), so the sink must check the partition again, as on an
assignment (sink.drift: a new generation), instead of skipping them as seen.

Unit level: a real GroupWorker and PartitionWriter on a temporary directory, fed batches through
``_handle`` the way the consumer loop does, with a consumer standing in for Kafka's log.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from footfall.layout import segment_files
from sink.checkpoint import CheckpointStore
from sink.consumer import TopicPartition
from sink.instruments import SinkMetrics
from sink.settings import SinkSettings
from sink.side_topics import SideProducer
from sink.worker import GroupWorker
from sink.writer import PartitionWriter
from tests.sink.support import FakeRecord, StandInConsumer
from tests.sink.test_gaps import _records

TP = TopicPartition("visit", 0)


class _LogConsumer(StandInConsumer):
    """The partition's log as Kafka would serve it to ListOffsets and one-off fetches."""

    def __init__(self, log: list[FakeRecord]) -> None:
        super().__init__()
        self.log = log

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.log[0].offset if self.log else 0)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.log[-1].offset + 1 if self.log else 0)

    async def fetch_once(
        self, positions: dict[TopicPartition, int], within: float
    ) -> dict[TopicPartition, list[FakeRecord]]:
        return {tp: [r for r in self.log if r.offset >= at][:1] for tp, at in positions.items()}


async def _holding(record_dir: Path, old_log: list[FakeRecord]) -> tuple[GroupWorker, _LogConsumer, SinkMetrics]:
    """A group worker that holds ``visit[0]`` (lock taken, writer recovered) over ``old_log``."""
    settings = SinkSettings(groups=["g:visit"], record_directory=str(record_dir))
    metrics = SinkMetrics()
    worker = GroupWorker(
        settings, "g", ["visit"], side=SideProducer(settings.brokers), metrics=metrics, stop=asyncio.Event()
    )
    consumer = _LogConsumer(old_log)
    worker.consumer = consumer  # type: ignore[assignment]
    writer = PartitionWriter(record_dir, "visit", 0, CheckpointStore(record_dir), out_topic="visit")
    writer.recover()
    worker.writers[TP] = writer
    worker.locks.keep(TP, await worker.locks.take(TP))
    return worker, consumer, metrics


async def test_a_position_reset_to_a_new_log_lands_it_as_a_new_generation(
    record_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old_log = _records(list(range(30)))
    worker, consumer, metrics = await _holding(record_dir, old_log)
    store = CheckpointStore(record_dir)

    # The old log: 30 records landed and committed, then (not committed yet) 5 more read.
    await worker._handle(TP, old_log[:25])  # type: ignore[arg-type]
    await worker.commit()
    await worker._handle(TP, old_log[25:])  # type: ignore[arg-type]
    (old_file,) = [path for path, _ in segment_files(record_dir, "visit")]
    # The topic is created again: a new log of 8 records; aiokafka reset the position to 0.
    new_log = _records(list(range(8)))
    new_log = [r._replace(value=(r.value or b"") + b" ") for r in new_log]  # other bytes than the old log's
    consumer.log = new_log
    with caplog.at_level(logging.ERROR, logger="sink"):
        await worker._handle(TP, new_log[:5])  # type: ignore[arg-type]

    # Nothing of the new log was skipped or appended to the old file; what was read is durable.
    assert old_file.read_bytes().count(b"\n") == 30
    assert store.load("visit", 0).offset == 29  # type: ignore[union-attr]
    assert TP not in worker.writers and TP in worker.recovery.bad and consumer.is_paused(TP)
    assert [r.getMessage() for r in caplog.records if "moved back" in r.getMessage()]

    # The loop's next turn checks the partition again: a new generation, consumed from the new log's start.
    with caplog.at_level(logging.ERROR, logger="sink"):
        await worker._retry_bad_checkpoints()
    assert TP in worker.writers and not consumer.is_paused(TP) and consumer.seeks[-1] == (TP, 0)
    assert metrics.log_restarts.labels("visit").value == 1
    await worker._handle(TP, new_log)  # type: ignore[arg-type]
    await worker.commit()
    files = {name.generation: path for path, name in segment_files(record_dir, "visit")}
    assert files[0] == old_file and old_file.read_bytes().count(b"\n") == 30
    assert files[1].read_bytes() == b"".join(r.value + b"\n" for r in new_log)  # type: ignore[operator]
    for tp in list(worker.writers):
        worker._drop(tp)


async def test_a_position_reset_on_an_empty_new_log_is_seen_without_any_record(record_dir: Path) -> None:
    """The topic came back empty: no record arrives to show the reset, the position itself does."""
    old_log = _records(list(range(10)))
    worker, consumer, metrics = await _holding(record_dir, old_log)
    await worker._handle(TP, old_log)  # type: ignore[arg-type]

    await worker._check_positions()
    assert TP in worker.writers  # the position is where the sink put it: nothing to do

    consumer.log = []  # created again, nothing written to it yet
    consumer.moved[TP] = -1  # aiokafka is resetting the position to the log's start
    await worker._check_positions()
    assert TP not in worker.writers and TP in worker.recovery.bad
    consumer.moved.clear()
    await worker._retry_bad_checkpoints()
    assert metrics.log_restarts.labels("visit").value == 1
    assert TP in worker.writers and consumer.seeks[-1] == (TP, 0)
    (old_file,) = [path for path, name in segment_files(record_dir, "visit") if name.generation == 0]
    assert old_file.read_bytes().count(b"\n") == 10  # what was read before is durable
    for tp in list(worker.writers):
        worker._drop(tp)
