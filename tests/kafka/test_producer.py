"""Scenario a: on Apache Kafka the gateway detects and uses the idempotent producer (acks=all),
and a 200 still means the reports are in Kafka.

The embedded broker refuses InitProducerId, so there the gateway falls back to a plain
producer; real Kafka grants a producer id, and the batches on disk prove it was used.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from footfall.kafka import probe_idempotence
from tests.faults.harness import KafkaScenario
from tests.kafka.support import topic_batches

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]


def test_idempotent_producer_is_detected_and_every_200_landed(kafka_faults: KafkaScenario) -> None:
    cluster = kafka_faults.cluster
    assert asyncio.run(probe_idempotence(cluster.bootstrap)), "Apache Kafka grants a producer id"
    # --idempotence on refuses to start without InitProducerId: starting at all is the detection.
    stack = kafka_faults.stack(gateway_args=("--idempotence", "on"))
    assert re.search(r'"idempotence":\s*true', stack.log_tail("gateway", 200_000)), "gateway did not log idempotence"

    run = kafka_faults.bench(stack, duration=4, rate=60, clients=8)
    summary = run.wait()
    assert summary["counts"]["ok"] > 0 and summary["counts"]["failed"] == 0, summary["errors"]
    kafka_faults.settle_and_verify(stack, run).assert_exact("idempotent producer on Apache Kafka")

    replicas = topic_batches(cluster, stack.config.visit_topic)
    written = [b for found in replicas.values() for b in found]
    assert written, f"no batches of {stack.config.visit_topic} on disk: {sorted(replicas)}"
    # An idempotent producer stamps every batch with its producer id and a sequence number;
    # a plain one writes producerId -1.
    assert all(b.producer_id >= 0 and b.base_sequence >= 0 for b in written), written[:5]
