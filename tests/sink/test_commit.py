"""The commit protocol's order: write -> fsync -> checkpoint replace (+ directory fsync) -> Kafka commit.

With fake writers that record each step in one shared journal, and a failure injected at
each step: a later step never runs for a partition whose earlier step failed, and nothing
reaches Kafka before the checkpoint it covers is durable. The last test runs a real
:class:`PartitionWriter` and checks, at the moment Kafka is asked to commit, that the
checkpoint on disk already says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from sink.checkpoint import Checkpoint, CheckpointStore
from sink.commit import CommitProtocol
from sink.consumer import TopicPartition
from sink.errors import SegmentWriteError
from sink.writer import PartitionWriter

A = TopicPartition("visit", 0)
B = TopicPartition("visit", 1)

Journal = list[tuple[str, str]]


class _FakeWriter:
    """Records its steps in ``journal``; ``fail_at`` names the step that raises."""

    def __init__(self, name: str, journal: Journal, *, offset: int = 9, fail_at: str | None = None) -> None:
        self.name, self.journal, self.fail_at = name, journal, fail_at
        self.checkpoint = Checkpoint(offset=-1)
        self._offset = offset
        self.checkpoint_dir = Path(f"/ckpt/{name}")

    @property
    def dirty(self) -> bool:
        return self.checkpoint.offset != self._offset

    def _step(self, step: str) -> None:
        if step == self.fail_at:
            raise SegmentWriteError(f"{self.name}: {step} failed", 28)
        self.journal.append((step, self.name))

    def write(self) -> None:
        self._step("write")

    def fsync(self) -> None:
        self._step("fsync")

    def replace_checkpoint(self, *, sync_dir: bool = True) -> None:
        assert not sync_dir, "the protocol fsyncs the checkpoint directories itself, once for all"
        self._step("checkpoint")
        self.checkpoint = Checkpoint(offset=self._offset)


def _protocol(
    journal: Journal, *, dir_fsync_fails: bool = False
) -> tuple[CommitProtocol, list[dict[TopicPartition, int]]]:
    commits: list[dict[TopicPartition, int]] = []

    async def kafka_commit(offsets: dict[TopicPartition, int]) -> bool:
        journal.append(("kafka", ",".join(sorted(f"{tp.partition}:{o}" for tp, o in offsets.items()))))
        commits.append(offsets)
        return True

    def sync_dirs(directories: Iterable[Path]) -> None:
        if dir_fsync_fails:
            raise OSError(5, "Input/output error")
        journal.append(("dirs", ",".join(sorted(str(d) for d in directories))))

    return CommitProtocol(kafka_commit, sync_dirs=sync_dirs), commits


async def test_steps_run_in_order_and_kafka_comes_last() -> None:
    journal: Journal = []
    protocol, commits = _protocol(journal)
    a, b = _FakeWriter("a", journal), _FakeWriter("b", journal, offset=4)
    result = await protocol.commit([(A, a), (B, b)])
    for name in ("a", "b"):
        steps = [step for step, who in journal if who == name]
        assert steps == ["write", "fsync", "checkpoint"]
    # Both partitions' checkpoints are replaced before the one directory fsync, which is before Kafka.
    order = [step for step, _ in journal]
    assert order.index("dirs") > max(i for i, s in enumerate(order) if s == "checkpoint")
    assert order[-1] == "kafka" and order.count("kafka") == 1
    assert journal[-2] == ("dirs", "/ckpt/a,/ckpt/b")
    assert commits == [{A: 10, B: 5}]  # the next offset to consume, from the replaced checkpoints
    assert result.durable and not result.failed and [o.tp for o in result.landed] == [A, B]


@pytest.mark.parametrize("step", ["write", "fsync", "checkpoint"])
async def test_a_failed_step_stops_that_partition_before_the_next_one(step: str) -> None:
    journal: Journal = []
    protocol, commits = _protocol(journal)
    failing, fine = _FakeWriter("a", journal, fail_at=step), _FakeWriter("b", journal)
    result = await protocol.commit([(A, failing), (B, fine)])
    steps = ["write", "fsync", "checkpoint"]
    assert [s for s, who in journal if who == "a"] == steps[: steps.index(step)]
    assert failing.checkpoint.offset == -1  # the old checkpoint holds
    assert commits == [{B: 10}]  # the other partition is landed and committed
    assert [o.tp for o in result.failed] == [A] and isinstance(result.failed[0].error, SegmentWriteError)
    assert ("dirs", "/ckpt/b") in journal


async def test_no_kafka_commit_when_the_checkpoint_directories_cannot_be_fsynced() -> None:
    journal: Journal = []
    protocol, commits = _protocol(journal, dir_fsync_fails=True)
    result = await protocol.commit([(A, _FakeWriter("a", journal))])
    assert commits == [] and not result.durable
    assert [s for s, _ in journal] == ["write", "fsync", "checkpoint"]


async def test_nothing_to_do_when_no_partition_is_dirty() -> None:
    journal: Journal = []
    protocol, commits = _protocol(journal)
    clean = _FakeWriter("a", journal, offset=-1)
    result = await protocol.commit([(A, clean)])
    assert journal == [] and commits == [] and not result.landed


async def test_kafka_is_asked_only_once_the_checkpoint_on_disk_covers_the_offset(record_dir: Path) -> None:
    """A real writer: when the Kafka commit is made, the checkpoint file already says offset 2
    and the segment already holds the three lines (fsynced before the checkpoint was replaced)."""
    store = CheckpointStore(record_dir)
    writer = PartitionWriter(record_dir, "visit", 0, store)
    writer.recover()
    writer.append(b'{"a":1}\n{"a":2}\n{"a":3}\n', 3, 2, 0, 17_532)
    seen: list[tuple[int | None, int]] = []

    async def kafka_commit(offsets: dict[TopicPartition, int]) -> bool:
        loaded = store.load("visit", 0)
        segment = record_dir / loaded.segment if loaded is not None and loaded.segment else None
        lines = segment.read_bytes().count(b"\n") if segment is not None else 0
        seen.append((loaded.offset if loaded is not None else None, lines))
        assert offsets == {A: 3}
        return True

    result = await CommitProtocol(kafka_commit).commit([(A, writer)])
    writer.close()
    assert seen == [(2, 3)]
    assert result.durable and [o.tp for o in result.landed] == [A]
