"""Write failures (ENOSPC, EIO, EACCES, a segment deleted under the sink...): back off, then park.

A partition whose write, fsync or checkpoint fails goes back to its checkpoint and is
consumed again after a backoff (0.1 s, doubling to 5 s). Once failures have lasted
``--write-retry-timeout``, its records are parked on ``<topic>.retry`` instead
(:mod:`sink.retry`; offsets settle when the retry topic acknowledged them) until a
checkpoint can be written again. A ``.retry`` partition never parks: it only backs off.

:class:`WriteFailures` counts, logs and decides; the worker does what it says.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Final, NamedTuple

from footfall.backoff import Backoff
from sink.consumer import TopicPartition, tp_name
from sink.errors import SegmentLostError, SegmentWriteError
from sink.instruments import SinkMetrics
from sink.writer import PartitionWriter

__all__ = ["AfterFailure", "WriteFailures"]

log = logging.getLogger(__name__)

#: Pause before consuming a partition again from its checkpoint after a failed write.
RETRY_BACKOFF: Final = Backoff(0.1, 5.0)


@dataclass
class _Failure:
    first: float
    attempts: int = 0
    parking: bool = False


class AfterFailure(NamedTuple):
    """What the worker does after a failed write of a partition.

    ``reset``: forget everything since the checkpoint and consume again from it;
    ``pause``: seconds to pause the partition first (0: at once, as it parks from now on).
    """

    reset: bool
    pause: float


class WriteFailures:
    """The failing partitions of one group worker (see the module docstring)."""

    def __init__(self, metrics: SinkMetrics, retry_timeout: float) -> None:
        self.metrics = metrics
        self.retry_timeout = retry_timeout
        self._failures: dict[TopicPartition, _Failure] = {}

    def __contains__(self, tp: object) -> bool:
        return tp in self._failures

    def parking(self, tp: TopicPartition) -> bool:
        """Whether ``tp``'s records go to the retry topic instead of its files."""
        failure = self._failures.get(tp)
        return failure is not None and failure.parking

    def count(self, writer: PartitionWriter, exc: SegmentWriteError) -> None:
        """Count a refused disk operation in ``footfall_sink_write_errors_total``."""
        self.metrics.write_errors.labels(writer.out_topic, exc.errno_name).inc()

    def failed(self, tp: TopicPartition, writer: PartitionWriter, exc: SegmentWriteError) -> AfterFailure:
        """Count and log a failed write of ``tp``; say how to go on."""
        if isinstance(exc, SegmentLostError):
            self.metrics.segments_lost.labels(writer.out_topic).inc()
            # Records up to the checkpoint that were in the lost file are gone with it ("gone").
            log.error(
                "open segment deleted or replaced under the sink; what it held past the checkpoint lands again "
                "in a new segment",
                extra={"tp": tp_name(tp), "segment": exc.segment, "error": str(exc), "gone": exc.landed_lines},
            )
        else:
            self.count(writer, exc)
        now = time.monotonic()
        failure = self._failures.get(tp)
        if failure is None:
            failure = self._failures[tp] = _Failure(first=now)
        failure.attempts += 1
        if failure.parking:
            # Everything since the checkpoint is parked already; only the checkpoint
            # itself is still to be written. Keep parking; try again next interval.
            log.warning("checkpoint still failing while parking", extra={"tp": tp_name(tp), "error": str(exc)})
            return AfterFailure(reset=False, pause=0.0)
        is_retry = tp.topic != writer.out_topic
        if not is_retry and now - failure.first >= self.retry_timeout:
            failure.parking = True
            log.error(
                "writes failing for too long; parking records on the retry topic",
                extra={"tp": tp_name(tp), "error": str(exc), "since_s": round(now - failure.first, 1)},
            )
            return AfterFailure(reset=True, pause=0.0)
        delay = RETRY_BACKOFF.delay(failure.attempts)
        log.warning(
            "write failed; retrying from the checkpoint",
            extra={"tp": tp_name(tp), "error": str(exc), "attempt": failure.attempts, "delay_s": delay},
        )
        return AfterFailure(reset=True, pause=delay)

    def succeeded(self, tp: TopicPartition) -> None:
        """A checkpoint of ``tp`` was written: its failures are over."""
        failure = self._failures.pop(tp, None)
        if failure is not None:
            log.info("writing works again", extra={"tp": tp_name(tp), "attempts": failure.attempts})

    def forget(self, tp: TopicPartition) -> None:
        self._failures.pop(tp, None)
