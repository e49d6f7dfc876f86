"""Recovery on assignment: a partition's files back to its checkpoint, its checkpoint against its log.

For a newly assigned partition (its file lock held, :mod:`sink.locks`):

    1. :meth:`~sink.writer.PartitionWriter.recover`: the checkpoint is loaded and checked
       against its segment file, then whatever lies past it is truncated or deleted;
    2. :func:`sink.drift.log_state` and :meth:`~sink.writer.PartitionWriter.align_to_log`:
       the checkpoint is compared with the log (started over: a new generation; retention
       loss: settled and counted), and :func:`sink.drift.report` says what changed.

An invalid checkpoint (:class:`~sink.errors.CheckpointError`) pauses only its partition:
it is said once per reason, counted in ``footfall_sink_bad_checkpoints``, and looked at
again every few seconds (:meth:`PartitionRecovery.due`) until it is fixed or restored. A
disk that refuses the clean-up is waited for (backoff, nothing consumed meanwhile).

Log bounds Kafka does not give (step 2 failing with a ``KafkaError`` or taking longer than
10 s) pause only their partition too, with a WARNING each attempt, and are asked again after
1 s, doubling to 5 s. On Apache Kafka that is a failover, not a fault of the sink: the
leader died (its partitions move once its broker session expires, 9 s by default) or froze
(a request to it hangs for the client's 40 s request timeout), or a new leader does not
serve offsets yet. The partition stays assigned and its file lock held; the worker goes on
with the others. Inside the rebalance callback the caller passes what is left of its budget
(``within``, :meth:`sink.worker.GroupWorker.on_assigned`). (Letting the error stop the worker
restarted it into the same failover, and each restart made the group rebalance again.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final, NamedTuple

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from footfall.backoff import Backoff
from footfall.layout import RETRY_SUFFIX
from sink import drift
from sink.checkpoint import Checkpoint, CheckpointStore
from sink.consumer import SinkConsumer, TopicPartition, tp_name
from sink.errors import CheckpointError, SegmentWriteError
from sink.failures import WriteFailures
from sink.instruments import SinkMetrics
from sink.settings import SinkSettings
from sink.writer import PartitionWriter

__all__ = ["PartitionRecovery"]

log = logging.getLogger(__name__)

#: How often a partition paused on an invalid checkpoint looks at it again.
_BAD_CHECKPOINT_RETRY: Final = 5.0
#: Retries of a recovery the disk refuses (nothing is consumed meanwhile).
_DISK_BACKOFF: Final = Backoff(0.1, 5.0)
#: Retries of log bounds Kafka did not give, and the bound on one attempt (it runs under the
#: worker's lock: a revoke waits for it).
_KAFKA_BACKOFF: Final = Backoff(1.0, 5.0)
_LOG_STATE_TIMEOUT: Final = 10.0


class _Bad(NamedTuple):
    writer: PartitionWriter
    due: float  # time.monotonic() when to look again
    reason: str
    counted: bool = True  # an invalid checkpoint (in footfall_sink_bad_checkpoints), not Kafka's silence
    attempt: int = 1


class PartitionRecovery:
    """Recovers a group worker's partitions (see the module docstring).

    Args:
        settings: the writers' settings (buffer, segment size and age, fsync).
        store: the checkpoints.
        metrics: bad checkpoints, log restarts, retention loss.
        failures: where refused disk operations are counted.
        stopping: whether the worker is stopping (a refused disk then raises).
    """

    def __init__(
        self,
        settings: SinkSettings,
        store: CheckpointStore,
        metrics: SinkMetrics,
        failures: WriteFailures,
        stopping: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.failures = failures
        self.stopping = stopping
        #: Partitions paused on an invalid checkpoint or on log bounds Kafka did not give.
        self.bad: dict[TopicPartition, _Bad] = {}

    def writer(self, tp: TopicPartition) -> PartitionWriter:
        """A new writer of ``tp`` (a ``.retry`` partition lands in its base topic's files)."""
        return PartitionWriter(
            self.settings.record_path,
            tp.topic,
            tp.partition,
            self.store,
            out_topic=tp.topic.removesuffix(RETRY_SUFFIX),
            buffer_bytes=self.settings.buffer_bytes,
            segment_bytes=self.settings.segment_bytes,
            segment_age=self.settings.segment_age,
            fsync=self.settings.fsync,
        )

    async def open(
        self, consumer: SinkConsumer, tp: TopicPartition, writer: PartitionWriter, within: float | None = None
    ) -> Checkpoint | None:
        """Steps 1-2 of the module docstring; the checkpoint to consume after, or None if paused
        (an invalid checkpoint, or log bounds Kafka did not give: :meth:`due` says when to try again).

        ``within``: seconds Kafka gets for the log bounds (at most 10 s; 0: not asked now, the
        partition waits for its turn in the worker's loop).

        Raises:
            SegmentWriteError: the disk refused and the worker is stopping.
        """
        attempt = 0
        while True:
            try:
                checkpoint = writer.recover()
                limit = _LOG_STATE_TIMEOUT if within is None else min(within, _LOG_STATE_TIMEOUT)
                if limit <= 0:
                    raise TimeoutError("no time left for Kafka in this rebalance")
                log_start, log_end, started_over = await asyncio.wait_for(
                    drift.log_state(consumer, tp, checkpoint, writer.matches_log), limit
                )
                change = writer.align_to_log(log_start, log_end, started_over=started_over)
                break
            except CheckpointError as exc:
                self._paused(consumer, tp, writer, exc)
                return None
            except (KafkaError, TimeoutError) as exc:
                self._unanswered(consumer, tp, writer, exc)
                return None
            except SegmentWriteError as exc:
                # The disk refuses even the clean-up: wait, without consuming anything.
                self.failures.count(writer, exc)
                if self.stopping():
                    raise
                attempt += 1
                await asyncio.sleep(_DISK_BACKOFF.delay(attempt))
        if change is not None:
            drift.report(tp, writer.out_topic, change, self.metrics)
        return writer.checkpoint

    def _paused(
        self, consumer: SinkConsumer, tp: TopicPartition, writer: PartitionWriter, exc: CheckpointError
    ) -> None:
        """Keep ``tp`` paused on its invalid checkpoint (said once per reason); the others go on."""
        consumer.pause(tp)
        previous = self.bad.get(tp)
        if previous is None or not previous.counted:
            self.metrics.bad_checkpoints.labels(writer.out_topic).inc()
        if previous is None or previous.reason != exc.reason:
            log.error(str(exc), extra={"tp": tp_name(tp), "checkpoint": str(exc.path)})
        self.bad[tp] = _Bad(writer, time.monotonic() + _BAD_CHECKPOINT_RETRY, exc.reason)

    def _unanswered(
        self, consumer: SinkConsumer, tp: TopicPartition, writer: PartitionWriter, exc: BaseException
    ) -> None:
        """Keep ``tp`` paused until Kafka gives its log bounds (a failover); the others go on."""
        consumer.pause(tp)
        previous = self.bad.get(tp)
        if previous is not None and previous.counted:
            self.metrics.bad_checkpoints.labels(writer.out_topic).dec()  # the checkpoint itself is valid now
        attempt = previous.attempt + 1 if previous is not None and not previous.counted else 1
        delay = _KAFKA_BACKOFF.delay(attempt)
        log.warning(
            "Kafka did not give the partition's log bounds; the partition waits, the others go on",
            extra={"tp": tp_name(tp), "error": repr(exc), "attempt": attempt, "retry_in_s": delay},
        )
        self.bad[tp] = _Bad(writer, time.monotonic() + delay, "log bounds", counted=False, attempt=attempt)

    def recheck(self, consumer: SinkConsumer, tp: TopicPartition, writer: PartitionWriter) -> None:
        """Pause ``tp`` and :meth:`open` it again now, as on an assignment: its log moved under the
        sink while it held the partition (the worker made its files durable first)."""
        consumer.pause(tp)
        self.bad[tp] = _Bad(writer, time.monotonic(), "log moved", counted=False)

    def due(self) -> list[tuple[TopicPartition, PartitionWriter]]:
        """The paused partitions to be looked at again now (:meth:`open` them)."""
        now = time.monotonic()
        return [(tp, bad.writer) for tp, bad in self.bad.items() if bad.due <= now]

    def fixed(self, tp: TopicPartition) -> None:
        """``tp`` opened after all: it is consumed again."""
        bad = self.bad.pop(tp)
        if bad.counted:
            self.metrics.bad_checkpoints.labels(bad.writer.out_topic).dec()
            log.info("checkpoint valid again; the partition resumes", extra={"tp": tp_name(tp)})
        elif bad.reason == "log moved":
            log.info("partition checked again after its log moved; it resumes", extra={"tp": tp_name(tp)})
        else:
            log.info("log bounds read; the partition resumes", extra={"tp": tp_name(tp), "attempts": bad.attempt})

    def drop(self, tp: TopicPartition) -> None:
        """``tp`` was revoked: forget why it was paused, if it was."""
        bad = self.bad.pop(tp, None)
        if bad is not None and bad.counted:
            self.metrics.bad_checkpoints.labels(tp.topic.removesuffix(RETRY_SUFFIX)).dec()
