"""Fixtures of the Apache Kafka scenarios: the session's cluster, healed after every test.

A scenario kills, stops and pauses nodes of the session cluster (``--broker kafka`` or
``kafka3``, see tests/conftest.py); ``cluster`` gives it that cluster and, whatever
happened, resumes and restarts every node afterwards so the next scenario starts whole.
``kafka_faults`` is the fault suite's ``Scenario`` (seeded log, bench, settle-then-verify)
with stacks on that cluster, on topics and a group of their own.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.kafka import KafkaCluster
from stack.processes import Stack
from tests.faults.conftest import _BASE_SEED
from tests.faults.harness import _VERIFY_RE, BenchRun, Scenario, VerifyResult, subprocess_env


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def cluster(kafka_cluster: KafkaCluster | None, request: pytest.FixtureRequest) -> Iterator[KafkaCluster]:
    """The session's Apache Kafka cluster; every node running again after the test."""
    assert kafka_cluster is not None, "the kafka/kafka3 markers skip this test on other brokers"
    yield kafka_cluster
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        for node_id in kafka_cluster.node_ids:
            print(f"--- kafka node {node_id} server.log (tail)\n{kafka_cluster.log_tail(node_id, 3000)}")
    for node_id in kafka_cluster.node_ids:
        if kafka_cluster.is_running(node_id):
            kafka_cluster.resume(node_id)
    for node_id in kafka_cluster.node_ids:
        if not kafka_cluster.is_running(node_id):
            kafka_cluster.start_node(node_id)


class KafkaScenario(Scenario):
    """A fault ``Scenario`` whose stacks run on the session's Apache Kafka cluster."""

    def __init__(self, seed: int, root: Path, cluster: KafkaCluster) -> None:
        super().__init__(seed, root)
        self.cluster = cluster

    def stack(self, **config: Any) -> Stack:
        """A stack on the cluster, with its own topics and sink group (RF as the cluster's)."""
        suffix = uuid.uuid4().hex[:8]
        config.setdefault("visit_topic", f"visit-{suffix}")
        config.setdefault("activity_topic", f"activity-{suffix}")
        config.setdefault("group", f"footfall-sink-{suffix}")
        rf = ("--replication-factor", str(self.cluster.replication_factor))
        config["gateway_args"] = (*rf, *config.get("gateway_args", ()))
        return super().stack(brokers=self.cluster.bootstrap, **config)

    def settle_and_verify(self, stack: Stack, run: BenchRun, timeout: float = 90.0) -> VerifyResult:
        """As the fault suite's, with ``bench verify`` told this stack's topic names."""
        topics = ["--visit-topic", stack.config.visit_topic, "--activity-topic", stack.config.activity_topic]
        deadline = time.monotonic() + timeout
        while True:
            result = verify(run.run_json, stack.config.record_directory, *topics)
            if result.lost == 0 or time.monotonic() >= deadline:
                break
            # Not all landed yet: look again once the sink's counter caught up, at most 3 s later.
            until = min(deadline, time.monotonic() + 3.0)
            while time.monotonic() < until:
                with contextlib.suppress(OSError):
                    if stack.landed() >= stack.accepted():
                        break
                time.sleep(0.25)
        self.log(f"verify: lost={result.lost} duplicated={result.duplicated} unexpected={result.unexpected}")
        return result


def verify(run_json: Path, record_directory: Path, *args: str) -> VerifyResult:
    """``python -m bench verify RUN.json --record-directory DIR ARGS...``, parsed."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "verify", str(run_json), "--record-directory", str(record_directory), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
        check=False,
    )
    output = done.stdout + done.stderr
    m = _VERIFY_RE.search(output)
    assert m is not None, f"bench verify printed no result (exit {done.returncode}):\n{output[-3000:]}"
    return VerifyResult(int(m[1]), int(m[2]), int(m[3]), output)


@pytest.fixture
def kafka_faults(request: pytest.FixtureRequest, tmp_path: Path, cluster: KafkaCluster) -> Iterator[KafkaScenario]:
    """``kafka_faults.stack()``, ``.bench(...)``, ``.settle_and_verify(...)``, ``.cluster``."""
    print(f"fault schedule seed: {_BASE_SEED} (replay with FOOTFALL_FAULT_SEED={_BASE_SEED})")
    scenario = KafkaScenario(_BASE_SEED, tmp_path, cluster)
    try:
        yield scenario
    finally:
        failed = getattr(request.node, "report_call", None)
        if failed is not None and failed.failed:
            print(scenario.diagnostics())
        scenario.close()
