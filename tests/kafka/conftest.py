"""Fixtures of the Apache Kafka scenarios: the session's cluster, healed after every test.

A scenario kills, stops and pauses nodes of the session cluster (``--broker kafka`` or
``kafka3``, see tests/conftest.py); ``cluster`` gives it that cluster and, whatever
happened, resumes and restarts every node afterwards so the next scenario starts whole.
``kafka_faults`` is the fault suite's ``KafkaScenario`` (seeded log, bench, settle-then-verify)
with stacks on that cluster, on topics and a group of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.kafka import KafkaCluster
from tests.faults.conftest import _BASE_SEED
from tests.faults.harness import KafkaScenario, call_failed, heal, run_scenario


@pytest.fixture
def cluster(kafka_cluster: KafkaCluster | None, request: pytest.FixtureRequest) -> Iterator[KafkaCluster]:
    """The session's Apache Kafka cluster; every node running again after the test."""
    assert kafka_cluster is not None, "the kafka/kafka3 markers skip this test on other brokers"
    try:
        yield kafka_cluster
    finally:
        heal(kafka_cluster, call_failed(request))


@pytest.fixture
def kafka_faults(request: pytest.FixtureRequest, tmp_path: Path, cluster: KafkaCluster) -> Iterator[KafkaScenario]:
    """``kafka_faults.stack()``, ``.bench(...)``, ``.settle_and_verify(...)``, ``.cluster``."""
    scenario = KafkaScenario(_BASE_SEED, tmp_path, cluster)
    yield from run_scenario(request, scenario)
