"""The Apache Kafka launcher (stack/kafka.py, ``footfall kafka``): starts, answers, survives
kill -9 and restart on its log dir, pauses, leaves no JVM behind, and says in one line what
to install when Java or Maven is missing.

These start real JVMs (a few seconds each): they run in every pass, since Java and Maven
are part of the development machine (scripts/setup.sh).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from footfall.kafka import ensure_topics
from stack.kafka import HOST, KafkaCluster
from stack.kafka_probe import kafka_metadata
from tests.faults.harness import alive, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]


def _footfall_kafka(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack.cli", "kafka", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
        check=False,
    )


def test_missing_java_is_one_line_naming_what_to_install(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    done = _footfall_kafka(env, "--nodes", "1")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "java not found" in lines[0] and "openjdk" in lines[0], done.stderr


def test_missing_maven_is_one_line_naming_what_to_install(tmp_path: Path) -> None:
    java = shutil.which("java")
    assert java is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(java)
    # An empty cache: the classpath must be resolved, and mvn is not on PATH.
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env["PYTHONPATH"] = str(REPO)
    done = _footfall_kafka(env, "--nodes", "1")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "mvn not found" in lines[0] and "maven" in lines[0], done.stderr


def _spawn_footfall_kafka(data_dir: Path) -> subprocess.Popen[str]:
    """``footfall kafka --nodes 1 --data-dir data_dir`` running; its stdout and stderr piped."""
    argv = ["kafka", "--nodes", "1", "--data-dir", str(data_dir), "--log-level", "warning"]
    return subprocess.Popen(
        [sys.executable, "-m", "stack.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )


def test_footfall_kafka_prints_the_nodes_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = _spawn_footfall_kafka(tmp_path)
    try:
        assert proc.stdout is not None
        bootstrap = proc.stdout.readline().strip()
        node = proc.stdout.readline().strip()
        assert re.fullmatch(r"127\.0\.0\.1:\d+", bootstrap), (bootstrap, proc.stderr and proc.stderr.read())
        m = re.fullmatch(r"node 1: (127\.0\.0\.1:\d+) pid (\d+) log (\S+)", node)
        assert m is not None and m[1] == bootstrap, node
        jvm = int(m[2])
        answer = kafka_metadata(HOST, int(bootstrap.split(":")[1]))
        assert answer is not None and answer.brokers.keys() == {1} and answer.controller_id == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert proc.stderr is not None
        assert f"kafka: stopped; its data stays in {tmp_path}" in proc.stderr.read(), "Ctrl+C says what it did"
        wait_for(lambda: not alive(jvm), 10, "the Kafka JVM to be gone")
        assert (tmp_path / "node-1" / "data" / "meta.properties").is_file(), "the log dir is kept"
    finally:
        proc.kill()
        proc.wait()


def test_a_data_dir_is_one_clusters_and_keeps_its_ports(tmp_path: Path) -> None:
    """What users do twice: a second launcher on a data dir in use, the wrong --nodes on one used
    before (each one line, exit 1, no JVM started), and a plain re-run (the same address again)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = _spawn_footfall_kafka(tmp_path)
    try:
        assert first.stdout is not None
        bootstrap = first.stdout.readline().strip()
        assert re.fullmatch(r"127\.0\.0\.1:\d+", bootstrap), first.stderr and first.stderr.read()
        second = _footfall_kafka(env, "--data-dir", str(tmp_path))
        assert second.returncode == 1 and second.stdout == ""
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and "runs Kafka on" in lines[0], second.stderr
        first.send_signal(signal.SIGINT)
        assert first.wait(60) == 0
    finally:
        first.kill()
        first.wait()

    wrong = _footfall_kafka(env, "--data-dir", str(tmp_path), "--nodes", "3")
    assert wrong.returncode == 1
    lines = wrong.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds a 1-node Kafka cluster" in lines[0] and "--nodes 1" in lines[0], wrong.stderr
    assert not (tmp_path / "node-2").exists(), "nothing of a second node was made"

    with KafkaCluster(1, tmp_path) as again:
        assert again.bootstrap == bootstrap, "a re-run on the same data dir moved to other ports"


def test_no_orphan_jvm_when_the_owner_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from stack.kafka import KafkaCluster
        cluster = KafkaCluster(1, Path({str(tmp_path)!r})).start()
        print(cluster.pid(1), flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert owner.stdout is not None
        jvm = int(owner.stdout.readline())
        assert alive(jvm)
        owner.kill()  # SIGKILL: no atexit, no cleanup of any kind
        owner.wait()
        wait_for(lambda: not alive(jvm), 15, f"the Kafka JVM {jvm} to die with its owner")
    finally:
        owner.kill()
        owner.wait()


async def _produce_and_count(bootstrap: str, topic: str, produce: int, expected: int) -> int:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]

    if produce:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(produce):
                await producer.send_and_wait(topic, str(i).encode())
        finally:
            await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        # Read until the records acked so far are all back (a restarted node can take seconds to
        # serve fetches on a loaded machine), then once more: a record too many shows as well.
        deadline = asyncio.get_running_loop().time() + 30
        count = 0
        while count < expected and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            count += sum(len(records) for records in batches.values())
        batches = await consumer.getmany(timeout_ms=500)
        return count + sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()


def test_kill_restart_keeps_the_log_and_pause_stops_answers(tmp_path: Path) -> None:
    with KafkaCluster(1, tmp_path, group_initial_rebalance_delay_ms=0) as cluster:
        props = (tmp_path / "node-1" / "server.properties").read_text().splitlines()
        for setting in ("unclean.leader.election.enable=false", "auto.create.topics.enable=false"):
            assert setting in props
        assert "default.replication.factor=1" in props and "min.insync.replicas=1" in props
        asyncio.run(ensure_topics(cluster.bootstrap, ["durable"], 1, cluster.replication_factor))
        assert asyncio.run(_produce_and_count(cluster.bootstrap, "durable", 5, expected=5)) == 5
        first = cluster.pid(1)
        cluster.kill(1)
        assert not alive(first) and not cluster.is_running(1)
        cluster.start_node(1)
        assert cluster.pid(1) != first
        survived = asyncio.run(_produce_and_count(cluster.bootstrap, "durable", 0, expected=5))
        assert survived == 5, "acked records survive kill -9"

        cluster.pause(1)
        assert kafka_metadata(HOST, cluster.port(1), timeout=1.0) is None, "a paused node answers nothing"
        cluster.resume(1)
        wait_for(lambda: kafka_metadata(HOST, cluster.port(1)) is not None, 10, "the resumed node to answer")
        pid = cluster.pid(1)
    assert not alive(pid), "stop() leaves no JVM"
    assert not cluster.is_running(1)


def test_settings_follow_the_compose_file(tmp_path: Path) -> None:
    """RF 3 and min.insync.replicas 2 on three nodes, RF 1 on one; as kafka/docker-compose.yml."""
    three, one = KafkaCluster(3, tmp_path / "three"), KafkaCluster(1, tmp_path / "one")
    assert (three.replication_factor, three.min_insync_replicas) == (3, 2)
    assert (one.replication_factor, one.min_insync_replicas) == (1, 1)
    assert three.node_ids == [1, 2, 3]
    with pytest.raises(Exception, match="not started"):
        _ = three.bootstrap


def test_footfall_up_kafka_runs_the_pipeline_on_apache_kafka(tmp_path: Path) -> None:
    records = tmp_path / "records"
    args = ["--record-directory", str(records), "--gateway-port", "0", "--sink-port", "0", "--dashboard-port", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "stack.cli", "up", "--kafka", *args, "--duration", "4", "--concurrent-clients", "4"],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "starting Apache Kafka" in done.stdout
    assert re.search(r"verify: lost=0 duplicated=0 unexpected=0 .* acknowledged=[1-9]", done.stdout), done.stdout
    # The broker's log dir lives beside the checkpoints, and no JVM outlived the command.
    assert (records / "_footfall" / "kafka" / "node-1" / "data" / "meta.properties").is_file()
    leftover = subprocess.run(["pgrep", "-f", str(records / "_footfall" / "kafka")], capture_output=True, check=False)
    assert leftover.stdout == b"", leftover.stdout


def test_footfall_up_refuses_kafka_with_brokers(tmp_path: Path) -> None:
    argv = ["up", "--kafka", "--brokers", "127.0.0.1:1", "--record-directory", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "stack.cli", *argv], capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )
    assert done.returncode == 2  # a flag conflict, like every bad flag
    expected = "footfall up: --kafka starts its own Kafka; give it or --brokers, not both"
    assert done.stderr.strip().splitlines() == [expected]
