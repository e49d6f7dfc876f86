"""Fixtures of the fault suite: a seeded scenario running the real stack, torn down whatever happens.

``FOOTFALL_FAULT_SEED=N`` replays a run's fault schedule (each scenario prints its seed and
every fault it injects with the time since it started). Role logs of a failed scenario are
printed after its failure.

The scenarios follow the session's broker switch (``--broker``, tests/conftest.py): on the
embedded broker each stack starts one of its own; on Apache Kafka (``--broker kafka``) the
stacks share the session's node, on topics and a sink group of their own, and the node is
resumed or restarted after each scenario. Scenarios that say nothing about the broker, or
that need the embedded one, are skipped on Kafka (``TANSU_ONLY`` there says why).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.kafka import KafkaCluster
from tests.faults.harness import KafkaScenario, Scenario, call_failed, heal, run_scenario

_BASE_SEED = int(os.environ.get("FOOTFALL_FAULT_SEED") or random.SystemRandom().randrange(1, 2**31))


def pytest_report_header() -> str:
    return f"fault schedule seed: {_BASE_SEED} (replay with FOOTFALL_FAULT_SEED={_BASE_SEED})"


@pytest.fixture
def faults(request: pytest.FixtureRequest, tmp_path: Path, kafka_cluster: KafkaCluster | None) -> Iterator[Scenario]:
    """One scenario: ``faults.stack()``, ``faults.bench(...)``, ``faults.log(...)``, ``faults.rng``."""
    if kafka_cluster is None:
        yield from run_scenario(request, Scenario(_BASE_SEED, tmp_path))
        return
    try:
        yield from run_scenario(request, KafkaScenario(_BASE_SEED, tmp_path, kafka_cluster))
    finally:
        heal(kafka_cluster, call_failed(request))
