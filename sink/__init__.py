"""Footfall sink: Kafka -> append-only segment files, exactly once (see docs/architecture.md).

A supervisor process runs N worker processes; each worker is a member of every
configured consumer group, so Kafka's group assignment maps partitions to processes.
Per assigned partition a :class:`~sink.writer.PartitionWriter` appends values to
segment files through a buffer; a per-partition checkpoint in the record directory
(not Kafka's committed offsets) says how far the files got, so recovery after
``kill -9``, restarts and rebalances truncates what was not checkpointed and resumes
right after it.
"""

from sink.settings import SinkSettings

__all__ = ["SinkSettings"]
