"""One sink worker process: a member of every configured consumer group.

Per group a :class:`GroupWorker` runs one consumer loop; per assigned partition it keeps
a :class:`~sink.writer.PartitionWriter`. Kafka's group assignment decides which
process writes which partition; a per-partition file lock (``_footfall/locks``) keeps
two processes on one machine from ever writing the same partition at once, even if a
rebalance outruns a slow revoke.

Commit order (:meth:`GroupWorker.commit`), every ``--flush-interval`` (also when no
record arrives: the consumer poll times out), on revoke and before stop:

    1. poison records of the batch were already acknowledged on ``<topic>.dlq``, and
       parked batches on ``<topic>.retry`` (acks=all), before their offsets were settled;
    2. write each partition's buffer to its segment file (one ``pwrite``);
    3. fsync the segment (``--fsync commit``/``always``; a new file's directory was
       fsynced when it was created);
    4. replace the partition's checkpoint atomically (offset, segment, byte length,
       parked ranges): from now on the records are landed, whatever crashes;
    5. commit ``offset + 1`` to Kafka (advisory, for lag monitoring; recovery does not
       rely on it);
    6. count the records as written and observe end-to-end latency.

Recovery (:meth:`GroupWorker.on_assigned`): for each newly assigned partition, take the
file lock, truncate files to the checkpoint (:meth:`PartitionWriter.recover`), seek to
``checkpoint.offset + 1``, and commit that to Kafka.

Offset gaps (:meth:`GroupWorker._contiguous`): the offsets of every consumed partition
(source topics and ``<topic>.retry``; none is compacted or transactional) are expected
to be contiguous, so a fetched batch that does not start at ``last offset + 1`` or has a
hole inside is treated as "not yet readable": the records before the hole are landed,
nothing past it is landed or checkpointed, and the partition is fetched again from the
first missing offset after a short pause. Under sustained load the embedded broker was
seen to hand out such holes, which a later fetch filled. Only a hole that persists for
``--gap-timeout`` seconds is accepted (logged, counted in
``footfall_sink_offset_gaps_total``), so a real hole cannot stall the partition forever.

Write failures (ENOSPC, EIO, EACCES...): the partition is reset to its checkpoint and
consumed again after a backoff; once failures have lasted ``--write-retry-timeout``,
its records are parked on ``<topic>.retry`` instead (offsets settle when the retry topic
acknowledged them) until a checkpoint can be written again. The same group consumes
``<topic>.retry`` and lands each parked record exactly once (:func:`sink.retry.lander_decision`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as errno_mod
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from footfall.kafka import HEADER_RECEIVED_MS
from footfall.logs import configure_logging
from footfall.metrics import SnapshotWriter
from sink.checkpoint import Checkpoint, CheckpointStore, fsync_dir
from sink.consumer import KafkaRecord, SinkConsumer, TopicPartition
from sink.errors import (
    CheckpointError,
    SegmentLostError,
    SegmentWriteError,
    SideTopicError,
    SinkError,
    WorkerStalledError,
)
from sink.instruments import SinkMetrics
from sink.liveness import Liveness
from sink.locks import PartitionLock
from sink.parent import ParentWatch
from sink.poison import CheckResult, PoisonCheck
from sink.retry import SideProducer, lander_decision, source_of
from sink.settings import RETRY_SUFFIX, SinkSettings, retry_topic
from sink.writer import MS_PER_DAY, LogChange, PartitionWriter

__all__ = ["GroupWorker", "Worker", "run_worker"]

log = logging.getLogger(__name__)

#: Sample the end-to-end latency of every Nth record (and the first of each batch).
_LATENCY_SAMPLE: Final = 64
_MAX_BACKOFF: Final = 5.0
_WAIT_FOR_SOURCE: Final = 1.0
#: Pause before fetching a partition again from the first missing offset of a gap
#: (doubling per attempt up to the maximum, until --gap-timeout).
_GAP_BACKOFF: Final = 0.05
_GAP_BACKOFF_MAX: Final = 0.5
#: How often a partition paused on an invalid checkpoint looks at it again.
_BAD_CHECKPOINT_RETRY: Final = 5.0
#: Bound on the fetch that checks a log's end (the offset fetched exists: only a broker in
#: trouble takes long, and then the worker fails and is restarted).
_PROBE_TIMEOUT: Final = 30.0


def _tp_name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


def _received_ms(record: KafkaRecord) -> int | None:
    for key, value in record.headers:
        if key == HEADER_RECEIVED_MS:
            return int(value) if value.isdigit() else None
    return None


@dataclass
class _Failure:
    first: float
    attempts: int = 0
    parking: bool = False


@dataclass
class _LockWait:
    lock: PartitionLock
    since: float  # time.monotonic() at assignment
    blocked: bool = False  # waited past --lock-timeout (logged, /readyz false)


@dataclass
class _Gap:
    missing: int  # first missing offset (= where the partition is fetched from again)
    found: int  # first offset that was handed out after it
    first: float  # clock() when first seen
    attempts: int = 0


def _commit_one(writer: PartitionWriter) -> tuple[bool, SegmentWriteError | None, float]:
    """Steps 2-4 for one partition, in a worker thread: (changed, error, seconds)."""
    started = time.perf_counter()
    try:
        changed = writer.commit(sync_dir=False)
    except SegmentWriteError as exc:
        return False, exc, time.perf_counter() - started
    return changed, None, time.perf_counter() - started


def _fsync_dirs(directories: set[Path]) -> None:
    for directory in directories:
        fsync_dir(directory)


class GroupWorker:
    """Consumes the topics of one consumer group (and their ``.retry`` topics) into files.

    Delivery: exactly once in files (see the module docstring for the commit order).
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
        self._locks: dict[TopicPartition, PartitionLock] = {}
        #: Partitions assigned while another process held their lock (paused until it is free).
        self._waiting: dict[TopicPartition, _LockWait] = {}
        #: Partitions paused on an invalid checkpoint: (their writer, when to look again, why).
        self._bad: dict[TopicPartition, tuple[PartitionWriter, float, str]] = {}
        types = settings.topic_types()
        self._checks = {t: PoisonCheck(t, types.get(t)) for t in self.topics}
        self._failures: dict[TopicPartition, _Failure] = {}
        self._paused_until: dict[TopicPartition, float] = {}
        self._gaps: dict[TopicPartition, _Gap] = {}
        #: Clock of the gap timeout (replaceable in tests).
        self.clock: Callable[[], float] = time.monotonic
        self._lock = asyncio.Lock()
        self._epoch = 0
        self._fatal: BaseException | None = None
        self.ready = asyncio.Event()
        client_id = f"footfall-sink-{socket.gethostname()}-{os.getpid()}"
        consumed = [*self.topics, *(retry_topic(t) for t in self.topics)]
        self.consumer = SinkConsumer(
            settings.brokers,
            group,
            consumed,
            on_revoked=self.on_revoked,
            on_assigned=self.on_assigned,
            session_timeout=settings.session_timeout,
            fetch_max_bytes=settings.fetch_max_bytes,
            client_id=client_id,
        )
        self.liveness = Liveness(
            self.consumer,
            metrics,
            stall_timeout=settings.stall_timeout,
            positions=lambda: {tp: w.checkpoint.offset + 1 for tp, w in self.writers.items()},
            # Paused on purpose (backoff, refetch, a bad checkpoint...) or writes failing: not a stall.
            paused=lambda tp: tp in self._failures or self.consumer.is_paused(tp),
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
        that could not be recovered must not be consumed.
        """
        try:
            async with self._lock:
                self._epoch += 1
                offsets: dict[TopicPartition, int] = {}
                for tp in assigned:
                    if tp in self.writers or tp in self._waiting or tp in self._bad:
                        continue
                    lock = await self._take_lock(tp)
                    if not lock.held:
                        # Never wait here: that would hold up every other partition too.
                        self._wait_for_lock(tp, lock)
                        continue
                    checkpoint = await self._recover(tp, lock)
                    if checkpoint is None:
                        continue  # invalid checkpoint: paused, the others go on
                    self.consumer.seek(tp, checkpoint.offset + 1)
                    offsets[tp] = checkpoint.offset + 1
                for tp in [tp for tp in [*self.writers, *self._waiting, *self._bad] if tp not in assigned]:
                    self._drop(tp)
                self.metrics.assigned.labels(self.group).set(len(self.writers))
                if offsets:
                    await self.consumer.commit({tp: o for tp, o in offsets.items() if o > 0})
                log.info(
                    "partitions assigned",
                    extra={"group": self.group, "partitions": [_tp_name(tp) for tp in sorted(self.writers)]},
                )
        except Exception as exc:  # aiokafka would swallow it; the worker must stop instead
            log.exception("partition recovery failed; the worker stops", extra={"group": self.group})
            self._fatal = exc
            self.stop_event.set()

    async def _take_lock(self, tp: TopicPartition) -> PartitionLock:
        """Try ``tp``'s file lock once (see :mod:`sink.locks`); ``lock.held`` says whether it was free."""
        lock = PartitionLock(self.root, tp.topic, tp.partition)
        delay = 0.1
        while True:
            try:
                lock.try_acquire()
                return lock
            except SegmentWriteError as exc:
                # The disk refuses even the lock file: wait (nothing is consumed meanwhile).
                errno_name = errno_mod.errorcode.get(exc.errno or 0, "unknown")
                self.metrics.write_errors.labels(tp.topic.removesuffix(RETRY_SUFFIX), errno_name).inc()
                log.warning("cannot open partition lock; retrying", extra={"tp": _tp_name(tp), "error": str(exc)})
                if self.stop_event.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)

    def _wait_for_lock(self, tp: TopicPartition, lock: PartitionLock) -> None:
        """Another process on this machine still writes ``tp`` (a slow revoke, a paused or
        orphaned process): keep it paused and try again each loop (:meth:`_retry_locks`)."""
        self.consumer.pause(tp)
        self._waiting[tp] = _LockWait(lock, time.monotonic())
        self.metrics.lock_waits.labels(tp.topic).inc()
        self.metrics.lock_waiting.labels(tp.topic).inc()
        log.warning(
            "partition lock held by another process; the partition waits, the others go on",
            extra={"tp": _tp_name(tp), "lock": str(lock.path), "holder": lock.holder()},
        )

    async def _retry_locks(self) -> None:
        """Take the locks that are free now; recover, seek and resume those partitions.

        A wait longer than ``--lock-timeout`` is logged as an error once and turns ``/readyz``
        false (``footfall_sink_lock_blocked_partitions``); the partition keeps waiting.
        """
        offsets: dict[TopicPartition, int] = {}
        now = time.monotonic()
        for tp, wait in list(self._waiting.items()):
            try:
                taken = wait.lock.try_acquire()
            except SegmentWriteError:
                taken = False  # the disk refuses the lock file: try again next loop
            if not taken:
                if not wait.blocked and now - wait.since >= self.settings.lock_timeout:
                    wait.blocked = True
                    self.metrics.lock_blocked.labels(tp.topic, str(tp.partition)).set(1)
                    log.error(
                        "partition lock still held; the partition lands nothing until its holder lets go",
                        extra={
                            "tp": _tp_name(tp),
                            "lock": str(wait.lock.path),
                            "holder": wait.lock.holder(),
                            "waited_s": round(now - wait.since, 1),
                        },
                    )
                continue
            self._end_wait(tp)
            checkpoint = await self._recover(tp, wait.lock)
            if checkpoint is None:
                continue  # invalid checkpoint: stays paused
            self.consumer.seek(tp, checkpoint.offset + 1)
            self.consumer.resume(tp)
            offsets[tp] = checkpoint.offset + 1
            log.info("partition lock taken", extra={"tp": _tp_name(tp), "waited_s": round(now - wait.since, 1)})
        if offsets:
            self.metrics.assigned.labels(self.group).set(len(self.writers))
            await self.consumer.commit({tp: o for tp, o in offsets.items() if o > 0})

    def _end_wait(self, tp: TopicPartition) -> _LockWait | None:
        wait = self._waiting.pop(tp, None)
        if wait is not None:
            # Every wait that ends is measured: lock taken, or the partition revoked while waiting.
            self.metrics.lock_wait_seconds.labels(tp.topic).observe(time.monotonic() - wait.since)
            self.metrics.lock_waiting.labels(tp.topic).dec()
            if wait.blocked:
                self.metrics.lock_blocked.labels(tp.topic, str(tp.partition)).set(0)
        return wait

    async def _recover(self, tp: TopicPartition, lock: PartitionLock) -> Checkpoint | None:
        """Recover ``tp``'s files (lock held) and align its checkpoint with the log.

        Returns the checkpoint to consume after, or None if the checkpoint is invalid: the
        partition then stays paused (lock kept) and is looked at again every few seconds
        (:meth:`_retry_bad_checkpoints`).
        """
        self._locks[tp] = lock
        is_retry = tp.topic.endswith(RETRY_SUFFIX)
        writer = PartitionWriter(
            self.root,
            tp.topic,
            tp.partition,
            self.store,
            out_topic=tp.topic.removesuffix(RETRY_SUFFIX) if is_retry else tp.topic,
            buffer_bytes=self.settings.buffer_bytes,
            segment_bytes=self.settings.segment_bytes,
            segment_age=self.settings.segment_age,
            fsync=self.settings.fsync,
        )
        return await self._open(tp, writer)

    async def _open(self, tp: TopicPartition, writer: PartitionWriter) -> Checkpoint | None:
        delay = 0.1
        while True:
            try:
                checkpoint = writer.recover()
                log_start, log_end, started_over = await self._log_state(tp, writer, checkpoint)
                change = writer.align_to_log(log_start, log_end, started_over=started_over)
                break
            except CheckpointError as exc:
                self._checkpoint_bad(tp, writer, exc)
                return None
            except SegmentWriteError as exc:
                # The disk refuses even the clean-up: wait, without consuming anything.
                self._count_error(writer, exc)
                if self.stop_event.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
        if change is not None:
            self._log_changed(tp, writer, change)
        checkpoint = writer.checkpoint
        self.writers[tp] = writer
        self.liveness.held(tp)
        self.metrics.recoveries.labels(writer.out_topic).inc()
        return checkpoint

    async def _log_state(
        self, tp: TopicPartition, writer: PartitionWriter, checkpoint: Checkpoint
    ) -> tuple[int, int, bool]:
        """(first offset, next offset to be written, started over) of ``tp``'s log.

        1. ListOffsets gives the bounds; where the end it reports does not pass the offset
           landed (a log that started over, or the embedded broker, whose answer is the last
           batch's first offset + 1), one fetch from the offset before it shows how far the
           log really goes;
        2. if the log still holds the record whose value ended the checkpointed segment, one
           fetch of it: another value there means another log (a topic created again that
           has grown past the checkpoint; Kafka's topic ids are out of aiokafka's reach).
        """
        start = (await self.consumer.beginning_offsets([tp]))[tp]
        end = (await self.consumer.end_offsets([tp]))[tp]
        if checkpoint.offset >= end > start:
            fetched = await self.consumer.fetch_once({tp: end - 1}, within=_PROBE_TIMEOUT)
            end = max(end, fetched[tp][-1].offset + 1)
        at = checkpoint.last_line_offset
        if at is None or checkpoint.last_line_crc is None or not start <= at < end:
            return start, end, False
        record = (await self.consumer.fetch_once({tp: at}, within=_PROBE_TIMEOUT))[tp][0]
        # Only the record at that very offset decides (a fetch that skipped it proves nothing).
        return start, end, record.offset == at and not writer.matches_log(record.value)

    def _log_changed(self, tp: TopicPartition, writer: PartitionWriter, change: LogChange) -> None:
        """Say what :meth:`PartitionWriter.align_to_log` found: an ERROR line and a metric each."""
        if change.restarted:
            self.metrics.log_restarts.labels(writer.out_topic).inc()
            log.error(
                "checkpoint ahead of the log: the partition's log started over (topic created again, broker "
                "data lost or restored); the earlier files stay, the new log lands in a new generation",
                extra={
                    "tp": _tp_name(tp),
                    "checkpoint_offset": change.stale_offset,
                    "log_start": change.log_start,
                    "log_end": change.log_end,
                    "generation": change.generation,
                },
            )
        if change.lost is not None:
            self.metrics.retention_lost.labels(tp.topic).inc(change.lost_records)
            log.error(
                "records removed from the log before they landed (retention): counted as lost",
                extra={
                    "tp": _tp_name(tp),
                    "first_lost": change.lost[0],
                    "last_lost": change.lost[1],
                    "lost": change.lost_records,
                    "generation": change.generation,
                },
            )

    def _checkpoint_bad(self, tp: TopicPartition, writer: PartitionWriter, exc: CheckpointError) -> None:
        """Keep ``tp`` paused on its invalid checkpoint (said once per reason); the others go on."""
        self.consumer.pause(tp)
        previous = self._bad.get(tp)
        if previous is None:
            self.metrics.bad_checkpoints.labels(writer.out_topic).inc()
        if previous is None or previous[2] != exc.reason:
            log.error(str(exc), extra={"tp": _tp_name(tp), "checkpoint": str(exc.path)})
        self._bad[tp] = (writer, time.monotonic() + _BAD_CHECKPOINT_RETRY, exc.reason)

    async def _retry_bad_checkpoints(self) -> None:
        """Look again at the invalid checkpoints that are due; consume the partitions fixed since."""
        now = time.monotonic()
        offsets: dict[TopicPartition, int] = {}
        for tp, (writer, due, _reason) in list(self._bad.items()):
            if due > now:
                continue
            checkpoint = await self._open(tp, writer)
            if checkpoint is None:
                continue
            del self._bad[tp]
            self.metrics.bad_checkpoints.labels(writer.out_topic).dec()
            log.info("checkpoint valid again; the partition resumes", extra={"tp": _tp_name(tp)})
            self.consumer.seek(tp, checkpoint.offset + 1)
            self.consumer.resume(tp)
            offsets[tp] = checkpoint.offset + 1
        if offsets:
            self.metrics.assigned.labels(self.group).set(len(self.writers))
            await self.consumer.commit({tp: o for tp, o in offsets.items() if o > 0})

    def _drop(self, tp: TopicPartition) -> None:
        writer = self.writers.pop(tp, None)
        if writer is not None:
            writer.close()
        lock = self._locks.pop(tp, None)
        if lock is not None:
            lock.release()
        self._end_wait(tp)
        if self._bad.pop(tp, None) is not None:
            self.metrics.bad_checkpoints.labels(tp.topic.removesuffix(RETRY_SUFFIX)).dec()
        self.liveness.dropped(tp)
        self._failures.pop(tp, None)
        self._paused_until.pop(tp, None)
        self._gaps.pop(tp, None)

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
                    if self._waiting:
                        await self._retry_locks()
                    if self._bad:
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
            records = [r for r in records if r.offset > writer.last_offset]
            if not records:
                return
        # Nothing past an offset gap is handled (so never settled or checkpointed) until
        # the gap heals on a refetch or outlives --gap-timeout.
        records = self._contiguous(tp, writer, records)
        if not records:
            return
        base = writer.out_topic
        if tp.topic != base:
            records = self._land_parked(tp, writer, records)
            if not records:
                return
        failure = self._failures.get(tp)
        if failure is not None and failure.parking:
            await self._park(tp, writer, records)
            return
        result = self._check(base, records)
        if result.poison:
            await self.side.dead_letter(tp.topic, result.poison)
            self.metrics.dlq.labels(base).inc(len(result.poison))
            for record, error in result.poison[:3]:
                log.warning(
                    "poison record sent to DLQ",
                    extra={"tp": _tp_name(tp), "offset": record.offset, "error": error[:300]},
                )
        try:
            if result.good:
                self._append(writer, result.good, result.lines)
            writer.settle(records[-1].offset)
        except SegmentWriteError as exc:
            self._write_failed(tp, writer, exc)

    def _contiguous(self, tp: TopicPartition, writer: PartitionWriter, records: list[KafkaRecord]) -> list[KafkaRecord]:
        """The leading records of ``records`` that follow ``writer.last_offset`` without a gap.

        Offsets of the sink's topics are contiguous (no compaction, no transactions), so a
        missing offset means the broker has not made it readable yet (seen on the embedded
        broker under load): the partition is fetched again from the first missing offset
        after a short pause, and the records before the gap are returned for landing.
        Only a gap that persists for ``--gap-timeout`` is accepted (see :meth:`_gap_accepted`).
        The first fetch of a partition is no exception: on assignment ``last_offset`` was
        set from the log's start (:meth:`PartitionWriter.align_to_log`), so a log that
        begins later after retention is expected, and anything else is a gap.

        Cost on the hot path: two comparisons (offsets within a fetch strictly increase,
        so first/last/count prove contiguity); the per-record scan runs only on a gap.
        """
        first = records[0].offset
        last_landed = writer.last_offset
        if first == last_landed + 1 and records[-1].offset - first == len(records) - 1:
            if self._gaps:
                self._gap_healed(tp, records[-1].offset)
            return records
        prev = last_landed
        for i, record in enumerate(records):
            offset = record.offset
            if offset > prev + 1 and not self._gap_accepted(tp, prev + 1, offset):
                if i:
                    self._gap_healed(tp, records[i - 1].offset)
                return records[:i]
            prev = max(prev, offset)
        self._gap_healed(tp, records[-1].offset)
        return records

    def _gap_healed(self, tp: TopicPartition, handled_up_to: int) -> None:
        """Forget ``tp``'s gap if the records now handled reach past its first missing offset."""
        gap = self._gaps.get(tp)
        if gap is None or handled_up_to < gap.missing:
            return
        del self._gaps[tp]
        self.metrics.offset_gap_refetches.labels(tp.topic).inc()
        log.info(
            "offset gap healed on refetch",
            extra={
                "tp": _tp_name(tp),
                "first_missing": gap.missing,
                "found": gap.found,
                "attempts": gap.attempts,
                "waited_s": round(self.clock() - gap.first, 3),
            },
        )

    def _gap_accepted(self, tp: TopicPartition, missing: int, found: int) -> bool:
        """Decide about offsets ``missing..found-1`` absent from a fetch of ``tp``.

        Returns True (log a warning, count ``footfall_sink_offset_gaps_total``) once the
        gap has persisted for ``--gap-timeout``; otherwise seeks ``tp`` back to ``missing``,
        pauses it (50 ms, doubling to 0.5 s) and returns False.
        """
        now = self.clock()
        gap = self._gaps.get(tp)
        if gap is not None and gap.missing < missing:
            self._gap_healed(tp, missing - 1)  # that one filled; this is a new gap
            gap = None
        if gap is None or gap.missing != missing:
            gap = self._gaps[tp] = _Gap(missing=missing, found=found, first=now)
            log.info(
                "offset gap in a fetch; fetching again from the first missing offset",
                extra={"tp": _tp_name(tp), "first_missing": missing, "found": found},
            )
        if now - gap.first >= self.settings.gap_timeout:
            del self._gaps[tp]
            self.metrics.offset_gaps.labels(tp.topic).inc()
            log.warning(
                "offset gap persisted; skipping the missing offsets",
                extra={
                    "tp": _tp_name(tp),
                    "first_missing": missing,
                    "last_missing": found - 1,
                    "missing": found - missing,
                    "attempts": gap.attempts,
                    "waited_s": round(now - gap.first, 3),
                },
            )
            return True
        gap.attempts += 1
        self.consumer.seek(tp, missing)
        self._pause(tp, min(_GAP_BACKOFF * 2 ** (gap.attempts - 1), _GAP_BACKOFF_MAX))
        return False

    def _check(self, topic: str, records: list[KafkaRecord]) -> CheckResult:
        if self.settings.poison_check:
            return self._checks[topic].check(records)
        return CheckResult(records, [], None)

    def _append(self, writer: PartitionWriter, good: list[KafkaRecord], lines: bytes | None) -> None:
        # Per-record work here is list comprehensions only; the bytes go in with one join.
        days = [r.timestamp // MS_PER_DAY for r in good]
        first_day = days[0]
        if days.count(first_day) == len(days):
            data = lines if lines is not None else b"\n".join([r.value for r in good]) + b"\n"  # type: ignore[misc]
            writer.append(data, len(good), good[-1].offset, good[0].offset, first_day)
        else:
            start = 0
            for i in range(1, len(good) + 1):
                if i == len(good) or days[i] != days[start]:
                    run = good[start:i]
                    data = b"\n".join([r.value for r in run]) + b"\n"  # type: ignore[misc]
                    writer.append(data, len(run), run[-1].offset, run[0].offset, days[start])
                    start = i
        samples = writer.pending_received_ms
        for record in good[::_LATENCY_SAMPLE]:
            received = _received_ms(record)
            if received is not None:
                samples.append(received)

    def _land_parked(
        self, tp: TopicPartition, writer: PartitionWriter, records: list[KafkaRecord]
    ) -> list[KafkaRecord]:
        """Filter records of a ``.retry`` partition down to those to land now (see lander_decision)."""
        land: list[KafkaRecord] = []
        sources: dict[int, Checkpoint | None] = {}
        skipped = 0
        for i, record in enumerate(records):
            source = source_of(record)
            if source is None:
                land.append(record)  # not parked by a sink: land as is
                continue
            partition, offset = source
            if partition not in sources:
                try:
                    sources[partition] = self.store.load(writer.out_topic, partition)
                except (CheckpointError, OSError):
                    # Unreadable now: "wait" (the source partition decides first, once it can).
                    sources[partition] = None
            decision = lander_decision(offset, sources[partition], writer.landed_from.get(partition, []))
            if decision == "wait":
                # The source partition has not settled this offset yet: come back later.
                self.consumer.seek(tp, record.offset)
                self._pause(tp, _WAIT_FOR_SOURCE)
                if i:
                    writer.settle(records[i - 1].offset)
                self.metrics.retry_skipped.labels(writer.out_topic).inc(skipped)
                if land:
                    self.metrics.retry_landed.labels(writer.out_topic).inc(len(land))
                return land
            if decision == "land":
                writer.mark_landed_from(partition, offset)
                land.append(record)
            else:
                skipped += 1
        if skipped:
            self.metrics.retry_skipped.labels(writer.out_topic).inc(skipped)
        if land:
            self.metrics.retry_landed.labels(writer.out_topic).inc(len(land))
        writer.settle(records[-1].offset)  # skipped ones are settled too
        return land

    async def _park(self, tp: TopicPartition, writer: PartitionWriter, records: list[KafkaRecord]) -> None:
        base = writer.out_topic
        result = self._check(base, records)
        if result.poison:
            await self.side.dead_letter(tp.topic, result.poison)
            self.metrics.dlq.labels(base).inc(len(result.poison))
        if result.good:
            await self.side.park(tp.topic, result.good)
            writer.mark_parked(result.good[0].offset, result.good[-1].offset)
            self.metrics.parked.labels(base).inc(len(result.good))
        writer.settle(records[-1].offset)

    # ------------------------------------------------------------------ commit

    async def commit(self) -> None:
        """Flush, fsync, checkpoint, then commit to Kafka (steps 2-6 of the module docstring).

        The partitions' blocking writes and fsyncs run in threads, in parallel, so one
        commit costs about one fsync, and aiokafka keeps fetching meanwhile. The lock is
        held throughout: nothing else touches the writers until they are done.
        """
        dirty = [(tp, w) for tp, w in self.writers.items() if w.dirty]
        if not dirty:
            return
        outcomes = await asyncio.gather(*(asyncio.to_thread(_commit_one, w) for _, w in dirty))
        # Step 4, end: make the checkpoint renames durable, one fsync per directory.
        synced = [w for (_, w), (changed, _, _) in zip(dirty, outcomes, strict=True) if changed]
        durable = True
        if synced and self.settings.fsync != "never":
            try:
                await asyncio.to_thread(_fsync_dirs, {w.checkpoint_dir for w in synced})
            except OSError as exc:
                # The data is fsynced; only the renames may not survive a machine crash, in
                # which case the old checkpoints hold and the rest is consumed again.
                log.error("checkpoint directory fsync failed; not committing to Kafka", extra={"error": str(exc)})
                durable = False
        offsets: dict[TopicPartition, int] = {}
        for (tp, writer), (changed, error, seconds) in zip(dirty, outcomes, strict=True):
            if error is not None:
                self._write_failed(tp, writer, error)
                continue
            now = time.time()
            topic = writer.out_topic
            self.metrics.commit_seconds.labels(topic).observe(seconds)
            fsync_hist = self.metrics.fsync_seconds.labels(topic)
            for fsync_s in writer.fsync_seconds:
                fsync_hist.observe(fsync_s)
            writer.fsync_seconds.clear()
            if not changed:
                continue
            offsets[tp] = writer.checkpoint.offset + 1
            records, nbytes, received = writer.take_committed_stats()
            if records:
                self.metrics.records_written.labels(topic).inc(records)
                self.metrics.bytes_written.labels(topic).inc(nbytes)
            if received:
                e2e = self.metrics.e2e_latency.labels(topic)
                for ms in received:
                    e2e.observe(max(0.0, now - ms / 1000))
            failure = self._failures.pop(tp, None)
            if failure is not None:
                log.info("writing works again", extra={"tp": _tp_name(tp), "attempts": failure.attempts})
        if offsets and durable:
            await self.consumer.commit(offsets)

    def _count_error(self, writer: PartitionWriter, exc: SegmentWriteError) -> None:
        name = errno_mod.errorcode.get(exc.errno or 0, "unknown")
        self.metrics.write_errors.labels(writer.out_topic, name).inc()

    def _segment_lost(self, tp: TopicPartition, writer: PartitionWriter, exc: SegmentLostError) -> None:
        self.metrics.segments_lost.labels(writer.out_topic).inc()
        # Records up to the checkpoint that were in the lost file are gone with it ("gone").
        log.error(
            "open segment deleted or replaced under the sink; what it held past the checkpoint lands again "
            "in a new segment",
            extra={"tp": _tp_name(tp), "segment": exc.segment, "error": str(exc), "gone": exc.landed_lines},
        )

    def _write_failed(self, tp: TopicPartition, writer: PartitionWriter, exc: SegmentWriteError) -> None:
        """Back off and consume again from the checkpoint; after the retry timeout, park."""
        if isinstance(exc, SegmentLostError):
            self._segment_lost(tp, writer, exc)
        else:
            self._count_error(writer, exc)
        now = time.monotonic()
        failure = self._failures.get(tp)
        if failure is None:
            failure = self._failures[tp] = _Failure(first=now)
        failure.attempts += 1
        if failure.parking:
            # Everything since the checkpoint is parked already; only the checkpoint
            # itself is still to be written. Keep parking; try again next interval.
            log.warning("checkpoint still failing while parking", extra={"tp": _tp_name(tp), "error": str(exc)})
            return
        writer.reset_to_checkpoint()
        self._gaps.pop(tp, None)  # consumed again from the checkpoint: a gap is looked at afresh
        self.consumer.seek(tp, writer.checkpoint.offset + 1)
        is_retry = tp.topic != writer.out_topic
        if not is_retry and now - failure.first >= self.settings.write_retry_timeout:
            failure.parking = True
            log.error(
                "writes failing for too long; parking records on the retry topic",
                extra={"tp": _tp_name(tp), "error": str(exc), "since_s": round(now - failure.first, 1)},
            )
            return
        delay = min(0.1 * 2 ** (failure.attempts - 1), _MAX_BACKOFF)
        self._pause(tp, delay)
        log.warning(
            "write failed; retrying from the checkpoint",
            extra={"tp": _tp_name(tp), "error": str(exc), "attempt": failure.attempts, "delay_s": delay},
        )


class Worker:
    """All group workers of one process, plus the side producer and metrics snapshots."""

    def __init__(self, settings: SinkSettings, metrics_dir: Path | None = None, index: int = 0) -> None:
        self.settings = settings
        self.index = index
        self.metrics = SinkMetrics()
        self.metrics_dir = metrics_dir
        self.stop_event = asyncio.Event()
        self.side = SideProducer(settings.brokers, client_id=f"footfall-sink-{socket.gethostname()}-{os.getpid()}")
        self.groups = [
            GroupWorker(settings, group, topics, side=self.side, metrics=self.metrics, stop=self.stop_event)
            for group, topics in settings.group_topics().items()
        ]

    def stop(self) -> None:
        """Ask for a graceful stop (safe from a signal handler)."""
        self.stop_event.set()
        self.side.stopping = True  # unacknowledged side-topic sends give up instead of retrying

    async def run(self) -> None:
        """Run until :meth:`stop`; drain (flush, fsync, commit) before returning."""
        snapshots = SnapshotWriter(self.metrics.registry, self.metrics_dir) if self.metrics_dir else None
        if snapshots is not None:
            snapshots.start()
        await self.side.start()
        try:
            tasks = [asyncio.create_task(g.run(), name=f"group-{g.group}") for g in self.groups]

            async def _ready() -> None:
                for g in self.groups:
                    await g.ready.wait()
                self.metrics.ready.set(1)
                if snapshots is not None:
                    snapshots.write()

            ready = asyncio.create_task(_ready())
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            ready.cancel()
            self.stop_event.set()  # one group failed: stop the others cleanly too
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self.metrics.ready.set(0)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        finally:
            await self.side.stop()
            if snapshots is not None:
                await snapshots.stop()


def run_worker(settings: SinkSettings, index: int, metrics_dir: str | None) -> None:
    """Entry point of a worker process (spawned by the supervisor).

    SIGTERM drains and exits 0; SIGINT is ignored (the supervisor decides, and a
    terminal's Ctrl+C reaches the whole process group). Exit code 1 on a fatal error.
    """
    configure_logging(settings.log_level, "sink")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Every fetched record is a fresh Python object, none of them in a cycle: collect the
    # young generation less often, and keep start-up objects out of every collection.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)

    # Die with the supervisor: a kill -9 of it must not leave workers consuming (step 1 of
    # sink.parent); returns False if it is gone already.
    parent = ParentWatch(settings.shutdown_timeout)
    if not parent.start():
        log.error("supervisor gone before the worker started; exiting", extra={"worker": index})
        raise SystemExit(1)

    async def main() -> None:
        # aiokafka clients must be created inside the running loop.
        worker = Worker(settings, Path(metrics_dir) if metrics_dir else None, index)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, parent.on_sigterm, worker.stop)
        parent.watch(loop, worker.stop)
        await worker.run()

    try:
        import uvloop

        uvloop.run(main())
    except SinkError as exc:
        # The exit code tells the supervisor whether a restart can help (sink.errors).
        log.error("worker failed", extra={"worker": index, "error": str(exc), "exitcode": exc.exit_code})
        raise SystemExit(exc.exit_code) from exc
    log.info("worker stopped", extra={"worker": index})
