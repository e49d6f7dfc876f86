"""The commit protocol: how records a worker has buffered become landed, in a fixed order.

:meth:`CommitProtocol.commit` runs every ``--flush-interval`` (also when no record arrives:
the consumer poll times out), on revoke and before stop (revoke is not called on stop).
Before it, the poison records of each batch were acknowledged on ``<topic>.dlq`` and parked
batches on ``<topic>.retry`` (acks=all) before their offsets were settled. Then, for every
partition with anything new:

    1. write its buffer to its segment file (one ``pwrite``);
    2. fsync the segment (``--fsync commit``/``always``; a new file's directory entry was
       fsynced when it was created) and check it is still the file the sink opened;
    3. replace its checkpoint atomically (temp file, fsync, rename: offset, segment, byte
       length, parked ranges), then fsync the checkpoint directories, once for all
       partitions: from now on the records are landed, whatever crashes;
    4. commit ``offset + 1`` to Kafka, only for partitions whose checkpoint is durable
       (advisory, for lag monitoring; recovery relies on the checkpoint files).

A partition whose step 1, 2 or 3 fails keeps its old checkpoint and is not committed to
Kafka; the others go on. If the directory fsync of step 3 fails, nothing is committed to
Kafka (the renames may not survive a machine crash; the old checkpoints then hold). Steps
1-3 of the partitions run in threads, in parallel, so one commit costs about one fsync and
aiokafka keeps fetching meanwhile; the caller holds its lock throughout, so nothing else
touches the writers until they are done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sink.checkpoint import Checkpoint, fsync_dir
from sink.consumer import TopicPartition
from sink.errors import SegmentWriteError

__all__ = ["CommitOutcome", "CommitProtocol", "CommitResult", "CommitWriter", "fsync_dirs"]

log = logging.getLogger(__name__)


class CommitWriter(Protocol):
    """What the protocol needs of a partition's writer (:class:`sink.writer.PartitionWriter`)."""

    @property
    def dirty(self) -> bool: ...
    @property
    def checkpoint(self) -> Checkpoint: ...
    @property
    def checkpoint_dir(self) -> Path: ...
    def write(self) -> None: ...
    def fsync(self) -> None: ...
    def replace_checkpoint(self, *, sync_dir: bool = True) -> None: ...


def fsync_dirs(directories: Iterable[Path]) -> None:
    """Step 3, end: make the checkpoint renames durable, one fsync per directory."""
    for directory in directories:
        fsync_dir(directory)


@dataclass
class CommitOutcome:
    """Steps 1-3 of one partition: ``error`` if one failed, else the checkpoint is replaced."""

    tp: TopicPartition
    writer: CommitWriter
    seconds: float
    error: SegmentWriteError | None = None


@dataclass
class CommitResult:
    """What one :meth:`CommitProtocol.commit` did, partition by partition."""

    #: Partitions whose checkpoint was replaced (and, if ``durable``, committed to Kafka).
    landed: list[CommitOutcome] = field(default_factory=list)
    #: Partitions whose step 1, 2 or 3 failed: their old checkpoint holds.
    failed: list[CommitOutcome] = field(default_factory=list)
    #: False if the checkpoint directories could not be fsynced (nothing went to Kafka).
    durable: bool = True


def _land(tp: TopicPartition, writer: CommitWriter) -> CommitOutcome:
    """Steps 1-3 (up to the directory fsync) for one partition, in a worker thread."""
    started = time.perf_counter()
    try:
        writer.write()  # 1.
        writer.fsync()  # 2.
        writer.replace_checkpoint(sync_dir=False)  # 3.
    except SegmentWriteError as exc:
        return CommitOutcome(tp, writer, time.perf_counter() - started, exc)
    return CommitOutcome(tp, writer, time.perf_counter() - started)


class CommitProtocol:
    """Runs the commit protocol of the module docstring for one group worker.

    Args:
        kafka_commit: commits ``{tp: next offset}`` to Kafka (``SinkConsumer.commit``).
        durable: False with ``--fsync never`` (no directory fsync either).
        sync_dirs: fsyncs the checkpoint directories (replaceable in tests).
    """

    def __init__(
        self,
        kafka_commit: Callable[[dict[TopicPartition, int]], Awaitable[bool]],
        *,
        durable: bool = True,
        sync_dirs: Callable[[Iterable[Path]], None] = fsync_dirs,
    ) -> None:
        self.kafka_commit = kafka_commit
        self.durable = durable
        self.sync_dirs = sync_dirs

    async def commit(self, writers: Sequence[tuple[TopicPartition, CommitWriter]]) -> CommitResult:
        """Land what ``writers`` buffered: steps 1-4 of the module docstring, in that order."""
        result = CommitResult()
        dirty = [(tp, w) for tp, w in writers if w.dirty]
        if not dirty:
            return result
        # Steps 1-3 per partition, in parallel threads.
        outcomes = await asyncio.gather(*(asyncio.to_thread(_land, tp, w) for tp, w in dirty))
        for outcome in outcomes:
            (result.failed if outcome.error is not None else result.landed).append(outcome)
        # Step 3, end: the renames are durable only once their directories are fsynced.
        if result.landed and self.durable:
            try:
                await asyncio.to_thread(self.sync_dirs, {o.writer.checkpoint_dir for o in result.landed})
            except OSError as exc:
                # The data is fsynced; only the renames may not survive a machine crash, in
                # which case the old checkpoints hold and the rest is consumed again.
                log.error("checkpoint directory fsync failed; not committing to Kafka", extra={"error": str(exc)})
                result.durable = False
        # Step 4: Kafka, last, and only what the files hold durably.
        if result.landed and result.durable:
            await self.kafka_commit({o.tp: o.writer.checkpoint.offset + 1 for o in result.landed})
        return result
