"""The retry topic: parking batches that cannot be written, and landing them later, once each.

Once a partition's writes have failed for ``--write-retry-timeout`` (:mod:`sink.failures`),
its records are *parked* on ``<topic>.retry`` instead of landed (:meth:`RetryTopic.park`):
poison goes to ``<topic>.dlq`` as usual, the rest is sent (acks=all) and its offsets are
settled in the source checkpoint as parked ranges. The same consumer group consumes
``<topic>.retry`` and lands each parked record in the topic's files
(:meth:`RetryTopic.landable`), exactly once, whatever order copies arrive in: the source
partition's checkpoint decides (:func:`lander_decision`).

The sends themselves, their headers and the DLQ are :mod:`sink.side_topics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from sink.checkpoint import Checkpoint, CheckpointStore, ranges_contain
from sink.consumer import KafkaRecord
from sink.errors import CheckpointError
from sink.instruments import SinkMetrics
from sink.poison import CheckResult
from sink.side_topics import SideProducer, source_of
from sink.writer import PartitionWriter

__all__ = ["Decision", "RetryTopic", "lander_decision"]

Decision = Literal["land", "skip", "wait"]


def lander_decision(source_offset: int, source: Checkpoint | None, landed: list[tuple[int, int]]) -> Decision:
    """What to do with a parked record of source offset ``source_offset``.

    ``source`` is the source partition's checkpoint, ``landed`` the source offsets (ranges)
    this retry partition already landed for that source partition.

    - ``skip`` if it was landed already (a batch parked twice), or the source
      checkpoint covers the offset without listing it as parked (after a crash the
      source consumed it again and landed it directly);
    - ``wait`` if the source checkpoint does not cover it yet (the source decides first);
    - ``land`` if the source checkpoint lists it as parked.
    """
    if ranges_contain(landed, source_offset):
        return "skip"
    if source is None or source.offset < source_offset:
        return "wait"
    return "land" if source.is_parked(source_offset) else "skip"


class RetryTopic:
    """Parks batches on ``<topic>.retry`` and decides which parked records land now.

    Args:
        store: the checkpoints (a retry partition reads its source partitions' checkpoints).
        side: the producer of the side topics.
        check: the poison check of a topic's batch.
        metrics: parked, landed-from-retry and skipped records, DLQ records.
    """

    def __init__(
        self,
        store: CheckpointStore,
        side: SideProducer,
        check: Callable[[str, list[KafkaRecord]], CheckResult],
        metrics: SinkMetrics,
    ) -> None:
        self.store = store
        self.side = side
        self.check = check
        self.metrics = metrics

    async def park(self, topic: str, writer: PartitionWriter, records: list[KafkaRecord]) -> None:
        """Send ``records`` of ``topic`` (poison to the DLQ, the rest to ``<topic>.retry``) and
        settle their offsets in ``writer`` (parked ranges: checkpointed by the next commit)."""
        base = writer.out_topic
        result = self.check(base, records)
        if result.poison:
            await self.side.dead_letter(topic, result.poison)
            self.metrics.dlq.labels(base).inc(len(result.poison))
        if result.good:
            await self.side.park(topic, result.good)
            writer.mark_parked(result.good[0].offset, result.good[-1].offset)
            self.metrics.parked.labels(base).inc(len(result.good))
        writer.settle(records[-1].offset)

    def landable(self, writer: PartitionWriter, records: list[KafkaRecord]) -> tuple[list[KafkaRecord], int | None]:
        """Of a ``.retry`` partition's ``records``, those to land now (see :func:`lander_decision`).

        Returns ``(records to land, None)``, every offset settled; or ``(records to land,
        offset)`` when the record at ``offset`` must wait for its source partition to decide
        first: the caller seeks back to ``offset`` and pauses the partition (nothing from
        ``offset`` on is settled).
        """
        land: list[KafkaRecord] = []
        sources: dict[int, Checkpoint | None] = {}
        skipped = 0
        wait_at: int | None = None
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
                wait_at = record.offset
                if i:
                    writer.settle(records[i - 1].offset)
                break
            if decision == "land":
                writer.mark_landed_from(partition, offset)
                land.append(record)
            else:
                skipped += 1
        else:
            writer.settle(records[-1].offset)  # skipped ones are settled too
        if skipped or wait_at is not None:
            self.metrics.retry_skipped.labels(writer.out_topic).inc(skipped)
        if land:
            self.metrics.retry_landed.labels(writer.out_topic).inc(len(land))
        return land, wait_at
