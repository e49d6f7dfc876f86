"""What the Apache Kafka scenarios read besides the pipeline's own answers: the nodes' log files."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from pathlib import Path

from stack.kafka import KafkaCluster

# Record batch v2 header (Kafka's DefaultRecordBatch): offsets of the fields read here.
_BATCH_LENGTH_AT = 8  # int32, bytes after this field
_PRODUCER_ID_AT = 43  # int64
_BASE_SEQUENCE_AT = 53  # int32
_HEADER_BYTES = 61


@dataclass(frozen=True)
class Batch:
    base_offset: int
    producer_id: int
    base_sequence: int


def batches(segment: Path) -> list[Batch]:
    """The record batches of one ``.log`` segment file, in file order."""
    data = segment.read_bytes()
    out: list[Batch] = []
    pos = 0
    while pos + _HEADER_BYTES <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, pos)
        if length <= 0:
            break  # preallocated tail
        producer_id = struct.unpack_from(">q", data, pos + _PRODUCER_ID_AT)[0]
        base_sequence = struct.unpack_from(">i", data, pos + _BASE_SEQUENCE_AT)[0]
        out.append(Batch(base_offset, producer_id, base_sequence))
        pos += _BATCH_LENGTH_AT + 4 + length
    return out


def topic_batches(cluster: KafkaCluster, topic: str) -> dict[str, list[Batch]]:
    """Every replica's batches of ``topic``: ``"node-N/topic-P"`` -> batches."""
    out: dict[str, list[Batch]] = {}
    for node_id in cluster.node_ids:
        data = cluster.data_dir / f"node-{node_id}" / "data"
        for partition_dir in sorted(data.glob(f"{topic}-*")):
            if not partition_dir.name.removeprefix(f"{topic}-").isdigit():
                continue
            found = [b for seg in sorted(partition_dir.glob("*.log")) for b in batches(seg)]
            out[f"node-{node_id}/{partition_dir.name}"] = found
    return out


async def _leaders(bootstrap: str, topic: str) -> dict[int, int]:
    from aiokafka import AIOKafkaClient  # type: ignore[import-untyped]
    from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

    client = AIOKafkaClient(bootstrap_servers=bootstrap.split(","))
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
        partitions = metadata.partitions_for_topic(topic) or set()
        return {p: metadata.leader_for_partition(TopicPartition(topic, p)) for p in sorted(partitions)}
    finally:
        await client.close()


async def _replicas(bootstrap: str, topic: str) -> dict[int, int]:
    from aiokafka import AIOKafkaClient  # type: ignore[import-untyped]

    client = AIOKafkaClient(bootstrap_servers=bootstrap.split(","))
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
        return {p: len(m.replicas) for p, m in sorted(metadata._partitions.get(topic, {}).items())}
    finally:
        await client.close()


def replicas(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> how many replicas it has, from the cluster's metadata (empty: no such topic)."""
    return asyncio.run(_replicas(bootstrap, topic))


def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> the node id leading it, from the cluster's metadata."""
    return asyncio.run(_leaders(bootstrap, topic))


def busiest_leader(bootstrap: str, topics: list[str]) -> int:
    """The node leading the most partitions of ``topics``."""
    counts: dict[int, int] = {}
    for topic in topics:
        for node_id in leaders(bootstrap, topic).values():
            counts[node_id] = counts.get(node_id, 0) + 1
    return max(counts, key=lambda n: counts[n])


def coordinator(bootstrap: str, group: str) -> int:
    """The node id coordinating consumer group ``group``."""
    return asyncio.run(_coordinator(bootstrap, group))


async def _coordinator(bootstrap: str, group: str) -> int:
    from aiokafka import AIOKafkaClient
    from aiokafka.client import CoordinationType  # type: ignore[import-untyped]

    client = AIOKafkaClient(bootstrap_servers=bootstrap.split(","))
    try:
        await client.bootstrap()
        return int(await client.coordinator_lookup(CoordinationType.GROUP, group))
    finally:
        await client.close()
