"""Offset-gap tracking: nothing past a missing offset lands until the gap heals or times out.

The offsets of every partition the sink consumes (source topics and ``<topic>.retry``; none
is compacted or transactional) are contiguous, so a fetched batch that does not start at
``last landed + 1``, or has a hole inside, is treated as "not yet readable": the records
before the hole are landed, nothing past it is landed or checkpointed, and the partition is
fetched again from the first missing offset after a short pause (50 ms, doubling to 0.5 s).
Under sustained load the embedded broker was seen to hand out such holes, which a later
fetch filled. Only a hole that persists for ``--gap-timeout`` seconds is accepted (logged,
counted in ``footfall_sink_offset_gaps_total``), so a real hole cannot stall the partition
forever. The first fetch of a partition is no exception: on assignment its last offset was
set from the log's start (:meth:`sink.writer.PartitionWriter.align_to_log`), so a log that
begins later after retention is expected, and anything else is a gap.

:class:`GapTracker` decides; the worker does what it says (seek, pause). It needs no Kafka.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol, TypeVar

from footfall.backoff import Backoff
from sink.consumer import TopicPartition, tp_name
from sink.instruments import SinkMetrics

__all__ = ["Gap", "GapTracker", "Refetch"]

log = logging.getLogger(__name__)

#: Pause before fetching a partition again from the first missing offset of a gap.
REFETCH_BACKOFF: Final = Backoff(0.05, 0.5)


class _HasOffset(Protocol):
    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=_HasOffset)


@dataclass
class Gap:
    """One partition's open gap."""

    missing: int  #: first missing offset (= where the partition is fetched from again)
    found: int  #: first offset that was handed out after it
    first: float  #: clock() when first seen
    attempts: int = 0  #: refetches so far


class Refetch(NamedTuple):
    """What the caller must do about an open gap: seek to ``offset``, pause for ``delay`` s."""

    offset: int
    delay: float


class GapTracker:
    """The gap state of every partition of one group worker (see the module docstring).

    Args:
        timeout: ``--gap-timeout``: how long a gap may persist before it is accepted.
        metrics: where accepted gaps and gaps healed on refetch are counted.
        clock: monotonic seconds (replaceable in tests).
    """

    def __init__(self, timeout: float, metrics: SinkMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.metrics = metrics
        self.clock = clock
        self._gaps: dict[TopicPartition, Gap] = {}

    def pending(self, tp: TopicPartition) -> Gap | None:
        """``tp``'s open gap, if any."""
        return self._gaps.get(tp)

    def forget(self, tp: TopicPartition) -> None:
        """Drop ``tp``'s gap (revoked, or consumed again from its checkpoint: looked at afresh)."""
        self._gaps.pop(tp, None)

    def contiguous(self, tp: TopicPartition, last_landed: int, records: list[R]) -> tuple[list[R], Refetch | None]:
        """The leading records that follow ``last_landed`` without a gap, and the refetch to do.

        Returns ``(records to handle, None)`` when there is no gap or every gap was accepted;
        ``(the records before the gap, Refetch)`` otherwise: the caller seeks to
        ``Refetch.offset`` and pauses the partition for ``Refetch.delay`` seconds.

        Cost on the hot path: two comparisons (offsets within a fetch strictly increase,
        so first/last/count prove contiguity); the per-record scan runs only on a gap.
        """
        first = records[0].offset
        if first == last_landed + 1 and records[-1].offset - first == len(records) - 1:
            if self._gaps:
                self._healed(tp, records[-1].offset)
            return records, None
        prev = last_landed
        for i, record in enumerate(records):
            offset = record.offset
            if offset > prev + 1:
                refetch = self._seen(tp, prev + 1, offset)
                if refetch is not None:
                    if i:
                        self._healed(tp, records[i - 1].offset)
                    return records[:i], refetch
            prev = max(prev, offset)
        self._healed(tp, records[-1].offset)
        return records, None

    def _healed(self, tp: TopicPartition, handled_up_to: int) -> None:
        """Forget ``tp``'s gap if the records now handled reach past its first missing offset."""
        gap = self._gaps.get(tp)
        if gap is None or handled_up_to < gap.missing:
            return
        del self._gaps[tp]
        self.metrics.offset_gap_refetches.labels(tp.topic).inc()
        log.info(
            "offset gap healed on refetch",
            extra={
                "tp": tp_name(tp),
                "first_missing": gap.missing,
                "found": gap.found,
                "attempts": gap.attempts,
                "waited_s": round(self.clock() - gap.first, 3),
            },
        )

    def _seen(self, tp: TopicPartition, missing: int, found: int) -> Refetch | None:
        """Decide about offsets ``missing..found-1`` absent from a fetch of ``tp``.

        Returns None (gap accepted: a warning, ``footfall_sink_offset_gaps_total``) once the
        gap has persisted for the timeout; otherwise the refetch from ``missing``.
        """
        now = self.clock()
        gap = self._gaps.get(tp)
        if gap is not None and gap.missing < missing:
            self._healed(tp, missing - 1)  # that one filled; this is a new gap
            gap = None
        if gap is None or gap.missing != missing:
            gap = self._gaps[tp] = Gap(missing=missing, found=found, first=now)
            log.info(
                "offset gap in a fetch; fetching again from the first missing offset",
                extra={"tp": tp_name(tp), "first_missing": missing, "found": found},
            )
        if now - gap.first >= self.timeout:
            del self._gaps[tp]
            self.metrics.offset_gaps.labels(tp.topic).inc()
            log.warning(
                "offset gap persisted; skipping the missing offsets",
                extra={
                    "tp": tp_name(tp),
                    "first_missing": missing,
                    "last_missing": found - 1,
                    "missing": found - missing,
                    "attempts": gap.attempts,
                    "waited_s": round(now - gap.first, 3),
                },
            )
            return None
        gap.attempts += 1
        return Refetch(missing, REFETCH_BACKOFF.delay(gap.attempts))
