"""``footfall up --brokers`` on a three-node cluster creates its topics replicated, as the compose file does.

It made them with one replica (the gateway's and the sink's default), so one node lost was data
lost, and nothing said so. Now ``--replication-factor`` defaults to 3, or to the brokers there
are if fewer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stack.kafka import KafkaCluster
from tests.faults.harness import REPO_ROOT, subprocess_env
from tests.kafka.support import replicas

pytestmark = [pytest.mark.integration, pytest.mark.kafka3, pytest.mark.slow, pytest.mark.timeout(240)]


def test_footfall_up_on_three_nodes_replicates_its_topics(cluster: KafkaCluster, tmp_path: Path) -> None:
    argv = ["up", "--brokers", cluster.bootstrap, "--record-directory", str(tmp_path / "records"), "--no-bench"]
    argv += ["--duration", "2", "--gateway-port", "0", "--sink-port", "0", "--dashboard-port", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "stack.cli", *argv],
        capture_output=True, text=True, timeout=200, cwd=REPO_ROOT, env=subprocess_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for topic in ("visit", "activity"):
        assert replicas(cluster.bootstrap, topic) == dict.fromkeys(range(4), 3), topic
