"""One consumer group of a sink worker process: the loop that ties the sink's parts together.

Per group a :class:`GroupWorker` runs one consumer loop; per assigned partition it keeps
a :class:`~sink.writer.PartitionWriter`. Each job has its own module that decides; this one
keeps the consumer loop (pauses, rebalance epochs) and calls them in order:

- on assignment: take the partition's file lock (:mod:`sink.locks`; a busy lock keeps the
  partition paused while the others go on), recover its files from the checkpoint and
  compare the checkpoint with the log (:mod:`sink.recovery`, :mod:`sink.drift`; an invalid
  checkpoint pauses only that partition), seek to ``checkpoint.offset + 1`` and commit that
  to Kafka;
- per fetched batch: drop what precedes the position, stop at an offset gap
  (:mod:`sink.gaps`), filter a ``.retry`` partition's records down to those to land
  (:mod:`sink.retry`), send poison to the DLQ (:mod:`sink.poison`, :mod:`sink.side_topics`),
  append the rest (or park it, :mod:`sink.failures`);
- every ``--flush-interval``, on revoke and before stop: the commit protocol
  (:mod:`sink.commit`: write, fsync, checkpoint, Kafka commit), then its metrics;
- all along: lag and stall watch (:mod:`sink.liveness`).

The process around the groups (side producer, metrics snapshots, signals, exit codes) is
:mod:`sink.process`.

(A little over 400 lines: the loop and the rebalance callbacks share one set of per-partition
pauses and epochs; every decision is in the modules above.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Final

from sink.checkpoint import Checkpoint, CheckpointStore
from sink.commit import CommitProtocol, CommitResult
from sink.consumer import KafkaRecord, SinkConsumer, TopicPartition, client_id, tp_name
from sink.errors import SegmentWriteError, SideTopicError, WorkerStalledError
from sink.failures import WriteFailures
from sink.gaps import GapTracker
from sink.instruments import SinkMetrics
from sink.lines import append_batch
from sink.liveness import Liveness
from sink.locks import PartitionLock, PartitionLocks
from sink.poison import CheckResult, PoisonCheck
from sink.recovery import PartitionRecovery
from sink.retry import RetryTopic
from sink.settings import SinkSettings, retry_topic
from sink.side_topics import SideProducer
from sink.writer import PartitionWriter

__all__ = ["GroupWorker"]

log = logging.getLogger(__name__)

#: Pause of a ``.retry`` partition whose next record waits for its source partition.
_WAIT_FOR_SOURCE: Final = 1.0


class GroupWorker:
    """Consumes the topics of one consumer group (and their ``.retry`` topics) into files.

    Delivery: exactly once in files (commit order: :mod:`sink.commit`).
    """

    def __init__(
        self,
        settings: SinkSettings,
        group: str,
        topics: Sequence[str],
        *,
        side: SideProducer,
        metrics: SinkMetrics,
        stop: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.group = group
        self.topics = list(topics)
        self.side = side
        self.metrics = metrics
        self.stop_event = stop
        self.root = settings.record_path
        self.store = CheckpointStore(self.root, durable=settings.fsync != "never")
        self.writers: dict[TopicPartition, PartitionWriter] = {}
        self.locks = PartitionLocks(
            self.root, metrics, lock_timeout=settings.lock_timeout, stopping=self.stop_event.is_set
        )
        types = settings.topic_types()
        self._checks = {t: PoisonCheck(t, types.get(t)) for t in self.topics}
        self.failures = WriteFailures(metrics, settings.write_retry_timeout)
        self.recovery = PartitionRecovery(settings, self.store, metrics, self.failures, self.stop_event.is_set)
        self.gaps = GapTracker(settings.gap_timeout, metrics)
        self.retry = RetryTopic(self.store, side, self._check, metrics)
        # Looked up at each commit: tests replace the consumer after construction.
        self.committer = CommitProtocol(
            lambda offsets: self.consumer.commit(offsets), durable=settings.fsync != "never"
        )
        self._paused_until: dict[TopicPartition, float] = {}
        self._lock = asyncio.Lock()
        self._epoch = 0
        self._fatal: BaseException | None = None
        self.ready = asyncio.Event()
        consumed = [*self.topics, *(retry_topic(t) for t in self.topics)]
        self.consumer = SinkConsumer(
            settings.brokers,
            group,
            consumed,
            on_revoked=self.on_revoked,
            on_assigned=self.on_assigned,
            session_timeout=settings.session_timeout,
            fetch_max_bytes=settings.fetch_max_bytes,
            client_id=client_id(),
        )
        self.liveness = Liveness(
            self.consumer,
            metrics,
            stall_timeout=settings.stall_timeout,
            positions=lambda: {tp: w.checkpoint.offset + 1 for tp, w in self.writers.items()},
            # Paused on purpose (backoff, refetch, a bad checkpoint...) or writes failing: not a stall.
            paused=lambda tp: tp in self.failures or self.consumer.is_paused(tp),
        )

    # ------------------------------------------------------------------ rebalance

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Before a rebalance: flush, fsync, checkpoint and commit, then let go of the partitions."""
        async with self._lock:
            await self.commit()
            for tp in revoked:
                self._drop(tp)
            self.metrics.assigned.labels(self.group).set(len(self.writers))

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """After a rebalance: recover each new partition from its checkpoint and seek past it.

        A failure here is fatal for the worker (the supervisor restarts it): a partition
        that could not be recovered must not be consumed. Log bounds Kafka does not give (a
        failover) are not a failure: that partition waits and is opened again later (:mod:`sink.recovery`).
        Kafka is given a third of ``--session-timeout`` for all of them here: aiokafka sends no
        heartbeat while this callback runs, and a member silent for a session is put out of the
        group (seen: a 10 s wait per assignment, then ``UnknownMemberId`` and a rebalance, forever).
        """
        loop = asyncio.get_running_loop()
        budget_ends = loop.time() + self.settings.session_timeout / 3
        try:
            async with self._lock:
                self._epoch += 1
                offsets: dict[TopicPartition, int] = {}
                for tp in assigned:
                    if tp in self.writers or tp in self.locks.waiting or tp in self.recovery.bad:
                        continue
                    lock = await self.locks.take(tp)
                    if not lock.held:
                        # Never wait here: that would hold up every other partition too.
                        self.consumer.pause(tp)
                        self.locks.wait(tp, lock)
                        continue
                    checkpoint = await self._recover(tp, lock, within=max(0.0, budget_ends - loop.time()))
                    if checkpoint is None:
                        continue  # invalid checkpoint or no log bounds yet: paused, the others go on
                    self.consumer.seek(tp, checkpoint.offset + 1)
                    offsets[tp] = checkpoint.offset + 1
                for tp in [tp for tp in [*self.writers, *self.locks.waiting, *self.recovery.bad] if tp not in assigned]:
                    self._drop(tp)
                self.metrics.assigned.labels(self.group).set(len(self.writers))
                if offsets:
                    await self.consumer.commit({tp: o for tp, o in offsets.items() if o > 0})
                log.info(
                    "partitions assigned",
                    extra={"group": self.group, "partitions": [tp_name(tp) for tp in sorted(self.writers)]},
                )
        except Exception as exc:  # aiokafka would swallow it; the worker must stop instead
            log.exception("partition recovery failed; the worker stops", extra={"group": self.group})
            self._fatal = exc
            self.stop_event.set()

    async def _retry_locks(self) -> None:
        """Recover, seek and resume the partitions whose lock is free now (:meth:`PartitionLocks.taken_now`)."""
        recovered: dict[TopicPartition, Checkpoint] = {}
        for tp, lock in self.locks.taken_now():
            checkpoint = await self._recover(tp, lock)
            if checkpoint is not None:  # else: invalid checkpoint, stays paused
                recovered[tp] = checkpoint
        await self._resume_recovered(recovered)

    async def _recover(self, tp: TopicPartition, lock: PartitionLock, within: float | None = None) -> Checkpoint | None:
        """Recover ``tp``'s files (lock held) and align its checkpoint with the log (:mod:`sink.recovery`).

        Returns the checkpoint to consume after, or None if the checkpoint is invalid: the
        partition then stays paused (lock kept) and is looked at again every few seconds
        (:meth:`_retry_bad_checkpoints`).
        """
        self.locks.keep(tp, lock)
        return await self._open(tp, self.recovery.writer(tp), within)

    async def _open(
        self, tp: TopicPartition, writer: PartitionWriter, within: float | None = None
    ) -> Checkpoint | None:
        checkpoint = await self.recovery.open(self.consumer, tp, writer, within)
        if checkpoint is None:
            return None
        self.writers[tp] = writer
        self.liveness.held(tp)
        self.metrics.recoveries.labels(writer.out_topic).inc()
        return checkpoint

    async def _retry_bad_checkpoints(self) -> None:
        """Look again at the invalid checkpoints that are due; consume the partitions fixed since."""
        recovered: dict[TopicPartition, Checkpoint] = {}
        for tp, writer in self.recovery.due():
            checkpoint = await self._open(tp, writer)
            if checkpoint is not None:
                self.recovery.fixed(tp)
                recovered[tp] = checkpoint
        await self._resume_recovered(recovered)

    async def _resume_recovered(self, recovered: dict[TopicPartition, Checkpoint]) -> None:
        """Consume partitions recovered while paused (lock freed, checkpoint fixed) from after their checkpoint."""
        if not recovered:
            return
        for tp, checkpoint in recovered.items():
            self.consumer.seek(tp, checkpoint.offset + 1)
            self.consumer.resume(tp)
        self.metrics.assigned.labels(self.group).set(len(self.writers))
        await self.consumer.commit({tp: c.offset + 1 for tp, c in recovered.items() if c.offset + 1 > 0})

    def _drop(self, tp: TopicPartition) -> None:
        writer = self.writers.pop(tp, None)
        if writer is not None:
            writer.close()
        self.locks.release(tp)
        self.recovery.drop(tp)
        self.liveness.dropped(tp)
        self.failures.forget(tp)
        self._paused_until.pop(tp, None)
        self.gaps.forget(tp)

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        """Consume until the stop event; then commit once more and leave the group.

        Raises:
            RecoveryError: a partition could not be recovered (after a clean stop).
        """
        await self.consumer.start()
        self.ready.set()
        watch = asyncio.create_task(self._watch(), name=f"liveness-{self.group}")
        interval = self.settings.flush_interval
        # Polls of at most --max-poll-records (aiokafka parses records lazily, per poll):
        # each poll is parsed, checked and joined while its objects are still in the CPU
        # cache (~15 % less CPU per record than draining a whole 4 MiB fetch at once).
        # Records left in aiokafka's buffer are safe: seek() discards a partition's
        # buffered records and a paused partition returns none.
        max_records = self.settings.max_poll_records or None
        last_commit = time.monotonic()
        try:
            while not self.stop_event.is_set():
                self._resume_due()
                epoch = self._epoch
                batch = await self.consumer.getmany(wait=interval, max_records=max_records)
                async with self._lock:
                    if epoch != self._epoch:
                        # A rebalance happened while fetching: these records may predate the
                        # seek to the checkpoint. Drop them and fetch again from our position.
                        for tp in batch:
                            writer = self.writers.get(tp)
                            if writer is not None:
                                self.consumer.seek(tp, writer.last_offset + 1)
                        continue
                    if self.locks.waiting:
                        await self._retry_locks()
                    if self.recovery.bad:
                        await self._retry_bad_checkpoints()
                    try:
                        for tp, records in batch.items():
                            if records:
                                self.liveness.fetched(tp)
                                await self._handle(tp, records)
                    except SideTopicError:
                        if not self.stop_event.is_set():
                            raise
                        # Stopping while Kafka does not acknowledge DLQ/retry sends: those
                        # offsets stay unsettled and are consumed again next time.
                        break
                    await self._check_positions()
                    if time.monotonic() - last_commit >= interval:
                        await self.commit()
                        last_commit = time.monotonic()
        finally:
            watch.cancel()
            self.ready.clear()
            self.side.stopping = True
            async with self._lock:
                # Revoke is not called on stop: this commit is the last chance.
                with contextlib.suppress(SideTopicError):
                    await self.commit()
                for tp in list(self.writers):
                    self._drop(tp)
                self.metrics.assigned.labels(self.group).set(0)
            # Leave the group only now (outside the lock, in case aiokafka calls back).
            await self.consumer.stop()
        if self._fatal is not None:
            raise self._fatal

    async def _watch(self) -> None:
        """Run :class:`~sink.liveness.Liveness`; a stall stops the worker for a restart."""
        try:
            await self.liveness.run(self.stop_event)
        except WorkerStalledError as exc:
            reason = "fetcher" if "fetch task" in str(exc) else "no_progress"
            self.metrics.stalls.labels(reason).inc()
            self.metrics.ready.set(0)
            log.error("worker stalled; stopping it for a restart", extra={"group": self.group, "error": str(exc)})
            self._fatal = exc
            self.stop_event.set()

    def _resume_due(self) -> None:
        if not self._paused_until:
            return
        now = time.monotonic()
        for tp, until in list(self._paused_until.items()):
            if until <= now:
                del self._paused_until[tp]
                if tp in self.writers:
                    self.consumer.resume(tp)

    def _pause(self, tp: TopicPartition, seconds: float) -> None:
        self.consumer.pause(tp)
        self._paused_until[tp] = time.monotonic() + seconds

    async def _handle(self, tp: TopicPartition, records: list[KafkaRecord]) -> None:
        writer = self.writers.get(tp)
        if writer is None:
            return  # not ours (any more)
        if tp in self._paused_until:
            # Backing off (aiokafka returns nothing for a paused partition, but should a
            # prefetched batch slip through, fetch it again later rather than skip it).
            self.consumer.seek(tp, writer.last_offset + 1)
            return
        if records[0].offset <= writer.last_offset:
            # aiokafka returns no record before the position it fetches from, and the sink
            # only ever seeks past what it landed: an earlier one means the position moved
            # back by itself (Kafka answered OFFSET_OUT_OF_RANGE and aiokafka reset it to the
            # log's start). The log started over under the sink without a rebalance: check
            # the partition again, as on an assignment (sink.drift), never skip the records.
            await self._log_moved_back(tp, writer, records[0].offset)
            return
        # Nothing past an offset gap is handled (so never settled or checkpointed) until
        # the gap heals on a refetch or outlives --gap-timeout.
        records, refetch = self.gaps.contiguous(tp, writer.last_offset, records)
        if refetch is not None:
            self.consumer.seek(tp, refetch.offset)
            self._pause(tp, refetch.delay)
        if not records:
            return
        base = writer.out_topic
        if tp.topic != base:
            records, wait_at = self.retry.landable(writer, records)
            if wait_at is not None:
                # The source partition has not settled that offset yet: come back later.
                self.consumer.seek(tp, wait_at)
                self._pause(tp, _WAIT_FOR_SOURCE)
            if not records:
                return
        if self.failures.parking(tp):
            await self.retry.park(tp.topic, writer, records)
            return
        result = self._check(base, records)
        if result.poison:
            await self.side.dead_letter(tp.topic, result.poison)
            self.metrics.dlq.labels(base).inc(len(result.poison))
            for record, error in result.poison[:3]:
                log.warning(
                    "poison record sent to DLQ",
                    extra={"tp": tp_name(tp), "offset": record.offset, "error": error[:300]},
                )
        try:
            if result.good:
                append_batch(writer, result.good, result.lines)
            writer.settle(records[-1].offset)
        except SegmentWriteError as exc:
            self._write_failed(tp, writer, exc)

    def _check(self, topic: str, records: list[KafkaRecord]) -> CheckResult:
        if self.settings.poison_check:
            return self._checks[topic].check(records)
        return CheckResult(records, [], None)

    def _write_failed(self, tp: TopicPartition, writer: PartitionWriter, exc: SegmentWriteError) -> None:
        """Go back to the checkpoint and consume again, after a backoff or parking (:mod:`sink.failures`)."""
        after = self.failures.failed(tp, writer, exc)
        if not after.reset:
            return
        writer.reset_to_checkpoint()
        self.gaps.forget(tp)  # consumed again from the checkpoint: a gap is looked at afresh
        self.consumer.seek(tp, writer.checkpoint.offset + 1)
        if after.pause:
            self._pause(tp, after.pause)

    # ------------------------------------------------------------------ commit

    async def _check_positions(self) -> None:
        """A held partition whose position aiokafka moved back by itself (:meth:`SinkConsumer.moved_back`)."""
        for tp, writer in list(self.writers.items()):
            if tp in self._paused_until or self.consumer.is_paused(tp):
                continue
            moved_to = self.consumer.moved_back(tp, writer.last_offset + 1)
            if moved_to is not None:
                await self._log_moved_back(tp, writer, moved_to)

    async def _log_moved_back(self, tp: TopicPartition, writer: PartitionWriter, fetched: int) -> None:
        """Make what was landed durable, then recover ``tp`` again at the loop's next turn."""
        log.error(
            "the partition's fetch position moved back by itself: its log started over or lost its start "
            "under the sink; landing what was read and checking the partition again",
            extra={"tp": tp_name(tp), "last_landed": writer.last_offset, "now_at": fetched},
        )
        result = await self.committer.commit(list(self.writers.items()))
        self._committed(result)
        if any(failed.tp == tp for failed in result.failed):
            return  # backing off (sink.failures); the next fetch from the reset position comes back here
        del self.writers[tp]
        self.liveness.dropped(tp)
        self.recovery.recheck(self.consumer, tp, writer)

    async def commit(self) -> None:
        """Run the commit protocol (:mod:`sink.commit`) over the partitions, then count what landed.

        Called with the lock held (or before the loop runs): nothing else touches the
        writers until the commit is done.
        """
        result = await self.committer.commit(list(self.writers.items()))
        self._committed(result)

    def _committed(self, result: CommitResult) -> None:
        """After a commit: back off the partitions that failed; metrics of those that landed."""
        for failed in result.failed:
            assert failed.error is not None
            self._write_failed(failed.tp, self.writers[failed.tp], failed.error)
        now = time.time()
        for landed in result.landed:
            tp, writer = landed.tp, self.writers[landed.tp]
            topic = writer.out_topic
            self.metrics.commit_seconds.labels(topic).observe(landed.seconds)
            fsync_hist = self.metrics.fsync_seconds.labels(topic)
            for fsync_s in writer.fsync_seconds:
                fsync_hist.observe(fsync_s)
            writer.fsync_seconds.clear()
            records, nbytes, received = writer.take_committed_stats()
            if records:
                self.metrics.records_written.labels(topic).inc(records)
                self.metrics.bytes_written.labels(topic).inc(nbytes)
            if received:
                e2e = self.metrics.e2e_latency.labels(topic)
                for ms in received:
                    e2e.observe(max(0.0, now - ms / 1000))
            self.failures.succeeded(tp)
