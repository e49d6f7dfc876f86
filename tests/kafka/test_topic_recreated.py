"""Scenario g: the topics deleted and created again while the sink runs.

On Apache Kafka a topic created again under the same name is a new topic (a new topic
id) whose offsets start from 0 again, below the sink's checkpoints. The sink must notice
(``footfall_sink_log_restarts_total`` and an ERROR line), leave every earlier file exactly
as it was, and land the new records in files of a new log generation.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from footfall import promtext
from footfall.kafka import ensure_topics
from footfall.layout import parse_segment_name
from tests.faults.harness import KafkaScenario, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]


def _files(root: Path, topics: list[str]) -> dict[Path, bytes]:
    return {p: p.read_bytes() for t in topics for p in sorted((root / t).rglob("*")) if p.is_file()}


async def _topics_now(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _delete(bootstrap: str, topics: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


def test_g_topic_deleted_and_created_again(kafka_faults: KafkaScenario) -> None:
    cluster = kafka_faults.cluster
    stack = kafka_faults.stack()
    topics = [stack.config.visit_topic, stack.config.activity_topic]
    records = stack.config.record_directory
    first = kafka_faults.bench(stack, duration=3, rate=40, clients=8)
    first.wait()
    kafka_faults.settle_and_verify(stack, first).assert_exact("before the topics were deleted")
    before = _files(records, topics)
    assert before, "the first load landed files"

    asyncio.run(_delete(cluster.bootstrap, topics))
    wait_for(lambda: not set(topics) & asyncio.run(_topics_now(cluster.bootstrap)), 30, "the topics to be gone")
    asyncio.run(ensure_topics(cluster.bootstrap, topics, stack.config.partitions, cluster.replication_factor))
    wait_for(lambda: set(topics) <= asyncio.run(_topics_now(cluster.bootstrap)), 30, "the topics to be back")
    recreated = time.monotonic()
    kafka_faults.log(f"topics {topics} deleted and created again")
    # Loud, while it runs (no restart, nothing produced yet): a metric and an ERROR line per
    # partition whose checkpoint is now ahead of the log, i.e. every partition that had landed.
    landed = {(n.topic, n.partition) for p in before if (n := parse_segment_name(p.name)) is not None}
    wait_for(
        lambda: promtext.total(stack.metrics("sink"), "footfall_sink_log_restarts_total") >= len(landed),
        60,
        f"the sink to report the log of each of {len(landed)} partitions started over",
    )
    noticed_s = time.monotonic() - recreated
    assert stack.log_tail("sink", 1_000_000).count("log started over") >= len(landed)
    assert not stack.exited(), stack.exited()

    second = kafka_faults.bench(stack, duration=3, rate=40, clients=8)
    second.wait()
    result = kafka_faults.settle_and_verify(stack, second, timeout=120)
    assert (result.lost, result.duplicated) == (0, 0), result.output[-2000:]
    after = _files(records, topics)
    changed = [str(p) for p, data in before.items() if after.get(p) != data]
    assert not changed, f"earlier files overwritten or appended to: {changed}"
    assert set(after) - set(before), "the new records landed in new files"
    # What landed before is still exactly there.
    kafka_faults.settle_and_verify(stack, first).assert_exact("the first load, after the topics came back")
    print(f"FIGURES g: {len(landed)} partitions' log restarts reported {noticed_s:.1f}s after the re-creation")
