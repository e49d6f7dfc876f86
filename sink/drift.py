"""Log drift: on assignment, a partition's checkpoint is compared with the partition's log.

A checkpoint describes the files; the log can have moved under it while the sink was away:

- **the log started over** (topic deleted and created again, a broker's data lost or
  restored from an older copy, the memory-only embedded broker restarted): the checkpoint
  is past the log's end, or the log holds another record at the offset of the segment's
  last line (its CRC differs). The earlier files stay as they are; the partition moves to
  its next *generation* (:mod:`footfall.layout`) and lands the new log from its first offset
  in files of its own;
- **retention removed records before they landed**: the log starts past the checkpoint.
  Those offsets are settled as lost (counted with their offsets), and consuming goes on
  from the log's start.

:func:`log_state` asks Kafka for the log's bounds, :func:`align` decides (pure, no I/O),
:meth:`sink.writer.PartitionWriter.align_to_log` makes the new checkpoint durable, and
:func:`report` says what changed (an ERROR line and a metric each).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sink.checkpoint import Checkpoint
from sink.consumer import SinkConsumer, TopicPartition, tp_name
from sink.instruments import SinkMetrics

__all__ = ["LogChange", "align", "log_state", "report"]

log = logging.getLogger(__name__)

#: Bound on the fetch that checks a log's end (the offset fetched exists: only a broker in
#: trouble takes long; sink.recovery bounds the whole check tighter and asks again later).
_PROBE_TIMEOUT: Final = 30.0


@dataclass(frozen=True)
class LogChange:
    """What :func:`align` found.

    Attributes:
        restarted: the checkpoint was ahead of the log's end: the log started over and
            the partition moved from generation ``generation - 1`` to ``generation``.
        generation: the partition's generation now.
        stale_offset: (restarted) the checkpoint offset of the earlier generation.
        lost: offsets ``(first, last)`` removed from the log (retention) before they
            landed, or None.
        log_start, log_end: the log's bounds it was checked against.
    """

    restarted: bool
    generation: int
    stale_offset: int
    lost: tuple[int, int] | None
    log_start: int
    log_end: int

    @property
    def lost_records(self) -> int:
        return 0 if self.lost is None else self.lost[1] - self.lost[0] + 1


async def log_state(
    consumer: SinkConsumer, tp: TopicPartition, checkpoint: Checkpoint, matches_log: Callable[[bytes | None], bool]
) -> tuple[int, int, bool]:
    """(first offset, next offset to be written, started over) of ``tp``'s log.

    ``matches_log(value)``: whether ``value`` is the record whose value ended the
    checkpointed segment (:meth:`sink.writer.PartitionWriter.matches_log`).

    1. ListOffsets gives the bounds; where the end it reports does not pass the offset
       landed (a log that started over, or the embedded broker, whose answer is the last
       batch's first offset + 1), one fetch from the offset before it shows how far the
       log really goes;
    2. if the log still holds the record whose value ended the checkpointed segment, one
       fetch of it: another value there means another log (a topic created again that
       has grown past the checkpoint; Kafka's topic ids are out of aiokafka's reach).
    """
    start = (await consumer.beginning_offsets([tp]))[tp]
    end = (await consumer.end_offsets([tp]))[tp]
    if checkpoint.offset >= end > start:
        fetched = await consumer.fetch_once({tp: end - 1}, within=_PROBE_TIMEOUT)
        end = max(end, fetched[tp][-1].offset + 1)
    at = checkpoint.last_line_offset
    if at is None or checkpoint.last_line_crc is None or not start <= at < end:
        return start, end, False
    record = (await consumer.fetch_once({tp: at}, within=_PROBE_TIMEOUT))[tp][0]
    # Only the record at that very offset decides (a fetch that skipped it proves nothing).
    return start, end, record.offset == at and not matches_log(record.value)


def align(
    ckpt: Checkpoint, log_start: int, log_end: int, *, started_over: bool = False
) -> tuple[Checkpoint, LogChange] | None:
    """The checkpoint that fits the log ``[log_start, log_end)``, and what changed; None if ``ckpt`` fits.

    ``started_over``: another record is at :attr:`Checkpoint.last_line_offset` than the
    one landed there.

    Steps:
        1. the checkpoint is ahead of the log (``offset + 1 > log_end``), or
           ``started_over``: the log started over; the partition moves to generation + 1
           with an empty checkpoint, so the new log lands from its first offset in files
           of its own;
        2. the log starts past the checkpoint (``log_start > offset + 1``): offsets
           ``offset + 1 .. log_start - 1`` were removed (retention) before they landed;
           they are settled as lost.
    """
    restarted = started_over or ckpt.offset + 1 > log_end
    new = Checkpoint(generation=ckpt.generation + 1) if restarted else ckpt
    lost = None
    if log_start > new.offset + 1:
        lost = (new.offset + 1, log_start - 1)
        new = Checkpoint(
            offset=log_start - 1,
            segment=new.segment,
            length=new.length,
            lines=new.lines,
            last_line_crc=new.last_line_crc,
            generation=new.generation,
            parked=list(new.parked),
            landed_from={k: list(v) for k, v in new.landed_from.items()},
        )
    if new is ckpt:
        return None
    change = LogChange(
        restarted=restarted,
        generation=new.generation,
        stale_offset=ckpt.offset,
        lost=lost,
        log_start=log_start,
        log_end=log_end,
    )
    return new, change


def report(tp: TopicPartition, out_topic: str, change: LogChange, metrics: SinkMetrics) -> None:
    """Say what :func:`align` found: an ERROR line and a metric each."""
    if change.restarted:
        metrics.log_restarts.labels(out_topic).inc()
        # Two signs: the checkpoint is past the log's end, or the log has grown past it with other records.
        sign = (
            "checkpoint ahead of the log"
            if change.stale_offset >= change.log_end
            else "the log holds other records than the files at the checkpoint"
        )
        log.error(
            f"{sign}: the partition's log started over (topic created again, broker "
            "data lost or restored); the earlier files stay, the new log lands in a new generation",
            extra={
                "tp": tp_name(tp),
                "checkpoint_offset": change.stale_offset,
                "log_start": change.log_start,
                "log_end": change.log_end,
                "generation": change.generation,
            },
        )
    if change.lost is not None:
        metrics.retention_lost.labels(tp.topic).inc(change.lost_records)
        log.error(
            "records removed from the log before they landed (retention): counted as lost",
            extra={
                "tp": tp_name(tp),
                "first_lost": change.lost[0],
                "last_lost": change.lost[1],
                "lost": change.lost_records,
                "generation": change.generation,
            },
        )
