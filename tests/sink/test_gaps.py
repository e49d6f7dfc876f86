"""Offset gaps handed out by the broker: nothing is landed or checkpointed past a gap.

Unit level, without a broker: a real :class:`GroupWorker` and :class:`PartitionWriter`
on a temporary directory, with a fake consumer that records seeks and pauses, fed
batches through ``_handle`` the way the consumer loop does.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from footfall.generator import DEFAULT_START_DATE, day_start_ms, original_visits, user_id
from footfall.reports import encode_report
from sink.checkpoint import Checkpoint, CheckpointStore
from sink.consumer import TopicPartition
from sink.instruments import SinkMetrics
from sink.settings import SinkSettings
from sink.side_topics import SideProducer
from sink.worker import GroupWorker
from sink.writer import PartitionWriter
from tests.sink.support import FakeRecord, StandInConsumer

TP = TopicPartition("visit", 0)
RETRY_TP = TopicPartition("visit.retry", 0)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _records(offsets: list[int], tp: TopicPartition = TP) -> list[FakeRecord]:
    rng = random.Random(7)
    day = day_start_ms(DEFAULT_START_DATE, 0)
    out: list[FakeRecord] = []
    while len(out) < len(offsets):
        for report in original_visits(rng, user_id(rng), day):
            if len(out) < len(offsets):
                off = offsets[len(out)]
                out.append(
                    FakeRecord(tp.topic, tp.partition, off, day, b"k", encode_report(report), (("ff-type", b"visit"),))
                )
    return out


class _Harness:
    def __init__(self, record_dir: Path, gap_timeout: float = 10.0, checkpoint: int | None = None) -> None:
        settings = SinkSettings(groups=["g:visit"], record_directory=str(record_dir), gap_timeout=gap_timeout)
        self.metrics = SinkMetrics()
        self.worker = GroupWorker(
            settings,
            "g",
            ["visit"],
            side=SideProducer(settings.brokers),
            metrics=self.metrics,
            stop=asyncio.Event(),
        )
        self.fake = StandInConsumer()
        self.worker.consumer = self.fake  # type: ignore[assignment]
        self.clock = _Clock()
        self.worker.gaps.clock = self.clock
        self.store = CheckpointStore(record_dir)
        if checkpoint is not None:
            self.store.save("visit", 0, Checkpoint(offset=checkpoint))
        for tp in (TP, RETRY_TP):
            writer = PartitionWriter(record_dir, tp.topic, tp.partition, self.store, out_topic="visit")
            writer.recover()
            self.worker.writers[tp] = writer
        self.record_dir = record_dir

    async def feed(self, offsets: list[int], tp: TopicPartition = TP) -> None:
        """Handle one fetched batch as the consumer loop does, then commit."""
        self.worker._resume_due()
        await self.worker._handle(tp, _records(offsets, tp))  # type: ignore[arg-type]
        await self.worker.commit()

    def resume(self) -> None:
        """The pause is over (as if its backoff had elapsed)."""
        self.worker._paused_until = dict.fromkeys(self.worker._paused_until, 0.0)

    def checkpoint(self, tp: TopicPartition = TP) -> int:
        loaded = self.store.load(tp.topic, tp.partition)
        assert loaded is not None
        return loaded.offset

    def lines(self) -> int:
        return sum(p.read_bytes().count(b"\n") for p in self.record_dir.glob("visit/date=*/*.jsonl"))

    def gaps(self) -> tuple[float, float]:
        """(accepted gaps, gaps healed on refetch) of topic visit."""
        return (
            self.metrics.offset_gaps.labels("visit").value,
            self.metrics.offset_gap_refetches.labels("visit").value,
        )

    def close(self) -> None:
        for tp in list(self.worker.writers):
            self.worker._drop(tp)


async def test_leading_gap_is_refetched_not_skipped(record_dir: Path) -> None:
    h = _Harness(record_dir)
    await h.feed(list(range(10)))
    assert h.checkpoint() == 9 and h.lines() == 10
    h.fake.seeks.clear()

    await h.feed(list(range(15, 21)))  # offsets 10..14 not handed out (yet)
    assert h.checkpoint() == 9 and h.lines() == 10  # nothing landed or checkpointed past the gap
    assert h.worker.writers[TP].last_offset == 9
    assert h.fake.seeks == [(TP, 10)] and TP in h.fake.paused  # refetch from the first missing offset
    assert h.gaps() == (0, 0)

    # A batch fetched before the seek that slips through while paused is not handled either.
    await h.feed(list(range(16, 21)))
    assert h.checkpoint() == 9 and h.fake.seeks[-1] == (TP, 10)

    h.resume()
    await h.feed(list(range(10, 21)))  # the refetch has them
    assert h.checkpoint() == 20 and h.lines() == 21
    assert TP not in h.fake.paused
    assert h.gaps() == (0, 1)
    h.close()


async def test_inner_gap_lands_records_before_it_only(record_dir: Path) -> None:
    h = _Harness(record_dir)
    await h.feed([0, 1, 2, 3, 4, 8, 9, 10, 11, 12])  # 5..7 missing inside the batch
    assert h.checkpoint() == 4 and h.lines() == 5
    assert h.fake.seeks == [(TP, 5)] and TP in h.fake.paused
    assert h.gaps() == (0, 0)

    h.resume()
    await h.feed(list(range(5, 13)))
    assert h.checkpoint() == 12 and h.lines() == 13
    assert h.gaps() == (0, 1)
    h.close()


async def test_first_batch_after_recovery_must_follow_the_checkpoint(record_dir: Path) -> None:
    h = _Harness(record_dir, checkpoint=99)
    await h.feed(list(range(105, 110)))  # position is 100 (checkpoint + 1)
    assert h.checkpoint() == 99 and h.lines() == 0
    assert h.fake.seeks == [(TP, 100)]
    h.close()


async def test_gap_at_the_start_of_a_partition_is_refetched(record_dir: Path) -> None:
    """Nothing landed yet and the log starts at 0: a first fetch from 5 is a gap like any other."""
    h = _Harness(record_dir)
    await h.feed(list(range(5, 10)))
    assert h.checkpoint() == -1 and h.lines() == 0
    assert h.fake.seeks == [(TP, 0)] and TP in h.fake.paused

    h.resume()
    await h.feed(list(range(10)))
    assert h.checkpoint() == 9 and h.lines() == 10
    assert h.gaps() == (0, 1)
    h.close()


async def test_a_log_that_starts_later_is_not_a_gap(record_dir: Path) -> None:
    """The log's start, learnt on assignment, is where the partition begins (retention loss is counted there)."""
    h = _Harness(record_dir)
    change = h.worker.writers[TP].align_to_log(500, 510)
    assert change is not None and change.lost == (0, 499) and not change.restarted
    await h.feed(list(range(500, 510)))
    assert h.checkpoint() == 509 and h.lines() == 10
    assert not h.fake.seeks and h.gaps() == (0, 0)
    h.close()


async def test_persistent_gap_is_accepted_after_the_timeout_and_counted(record_dir: Path) -> None:
    h = _Harness(record_dir, gap_timeout=10.0)
    await h.feed(list(range(5)))
    await h.feed([*range(5, 8), *range(20, 25)])  # 8..19 missing
    assert h.checkpoint() == 7
    assert h.fake.seeks == [(TP, 8)]

    h.clock.now += 9.0  # still within the timeout: refetched again, nothing past the gap
    h.resume()
    await h.feed(list(range(20, 25)))
    assert h.checkpoint() == 7 and h.lines() == 8
    assert h.fake.seeks == [(TP, 8), (TP, 8)]
    gap = h.worker.gaps.pending(TP)
    assert gap is not None and gap.attempts == 2

    h.clock.now += 1.5  # the gap has lasted 10.5 s: accepted as a real hole
    h.resume()
    await h.feed(list(range(20, 25)))
    assert h.checkpoint() == 24 and h.lines() == 13
    assert h.gaps() == (1, 0)
    assert h.worker.gaps.pending(TP) is None and TP not in h.fake.paused

    # The next gap starts its own timeout.
    await h.feed([*range(25, 27), 30])
    assert h.checkpoint() == 26 and h.fake.seeks[-1] == (TP, 27)
    h.close()


async def test_zero_timeout_accepts_gaps_at_once(record_dir: Path) -> None:
    h = _Harness(record_dir, gap_timeout=0.0)
    await h.feed(list(range(3)))
    await h.feed([5, 6, 9])
    assert h.checkpoint() == 9 and h.lines() == 6
    assert h.gaps() == (2, 0) and not h.fake.seeks
    h.close()


async def test_gap_on_the_retry_topic_is_refetched(record_dir: Path) -> None:
    """``<topic>.retry`` offsets are contiguous too (not compacted, not transactional).

    Its records lack ``ff-source-*`` headers here, so the lander lands them as they are.
    """
    h = _Harness(record_dir)
    await h.feed(list(range(3)), RETRY_TP)
    await h.feed([3, 7, 8], RETRY_TP)
    assert h.checkpoint(RETRY_TP) == 3
    assert h.fake.seeks == [(RETRY_TP, 4)]
    assert h.metrics.offset_gaps.labels("visit.retry").value == 0
    h.close()
