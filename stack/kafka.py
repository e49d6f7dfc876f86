"""Apache Kafka on loopback: one node or a KRaft cluster of N combined broker+controller nodes.

The broker is the ``org.apache.kafka:kafka_2.13`` jar from Maven Central, the same code as
the ``apache/kafka`` image in ``kafka/docker-compose.yml``, run as plain JVM processes:

1. Maven resolves the runtime classpath from ``kafka/pom.xml`` (:mod:`stack.kafka_jars`);
2. each node gets a ``server.properties`` with the compose file's settings (RF 3 and
   ``min.insync.replicas`` 2 for three nodes, RF 1 for one, unclean election off, no
   auto-created topics), its storage is formatted once with ``kafka.tools.StorageTool``;
3. the nodes start on free loopback ports (kept for the cluster's life, so a restarted
   node comes back where its peers expect it; on a ``data_dir`` used before, the ports of the
   last run when they are free, so clients find the cluster where it was), and ``start()`` returns once every node
   answers a Metadata request listing every node and a controller, and grants a
   producer id (what an idempotent producer needs first; :mod:`stack.kafka_probe`).

A ``data_dir`` is one cluster's: while it runs, ``<data_dir>/footfall-kafka.lock`` keeps a
second launcher off it, and a directory formatted for another number of nodes is refused
(both one line, before any JVM starts).

Every node gets ``PR_SET_PDEATHSIG`` (it dies with the process that started it, even on
``kill -9``) and an ``atexit`` hook stops the cluster on a normal exit: no orphan JVMs.
The death signal follows the *thread* that forked the node, so start nodes from a
long-lived thread (the main thread), never from a short-lived worker thread.

Fault tests pick one node by id: ``kill`` (SIGKILL), ``stop_node`` (SIGTERM, then
SIGKILL), ``start_node`` (on its durable log dir), ``pause``/``resume`` (SIGSTOP/SIGCONT).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

from footfall.errors import BrokerUnavailableError, FootfallError, StartupError
from footfall.preflight import check_directory, check_listen, claim
from stack.broker import free_port
from stack.children import StartStop, spawn
from stack.kafka_jars import java_command, kafka_classpath
from stack.kafka_probe import ClusterMetadata, grants_producer_id, kafka_metadata

__all__ = ["KafkaCluster"]

log = logging.getLogger(__name__)

HOST: Final = "127.0.0.1"


@dataclass
class _Node:
    node_id: int
    port: int  # client listener (PLAINTEXT)
    controller_port: int  # KRaft quorum listener, never advertised
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_dir(self) -> Path:
        return self.directory / "data"

    @property
    def properties(self) -> Path:
        return self.directory / "server.properties"

    @property
    def server_log(self) -> Path:
        return self.directory / "server.log"


class KafkaCluster(StartStop):
    """``nodes`` Apache Kafka nodes (KRaft, each broker and controller) on loopback.

    Use as a context manager, or ``start()``/``stop()``. The durable log dirs live under
    ``data_dir`` (``node-N/data``); a temporary directory, removed on ``stop()``, when None.
    Starting again on the same ``data_dir`` reuses the formatted storage and cluster id.

    Args:
        nodes: how many nodes; ids are 1..nodes, as in ``kafka/docker-compose.yml``.
        data_dir: where each node keeps its config, log dir and ``server.log``.
        heap: the JVM heap of each node (``-Xms``/``-Xmx``).
        group_initial_rebalance_delay_ms: the coordinator's wait before a new group's first
            assignment (the compose file's 3000 ms; tests want it small).
        overrides: further ``server.properties`` entries, applied last.

    Attributes:
        bootstrap: ``127.0.0.1:P1,127.0.0.1:P2,...`` for Kafka clients, once started.
        node_ids: the node ids, ``[1, ..., nodes]``.
    """

    def __init__(
        self,
        nodes: int = 1,
        data_dir: Path | None = None,
        heap: str = "512m",
        *,
        group_initial_rebalance_delay_ms: int = 3000,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        if nodes < 1:
            raise FootfallError(f"--nodes must be at least 1, got {nodes}")
        self.node_ids: list[int] = list(range(1, nodes + 1))
        self.heap = heap
        self.group_initial_rebalance_delay_ms = group_initial_rebalance_delay_ms
        self.overrides = dict(overrides or {})
        self._given_dir = data_dir
        self._data_dir: Path | None = None
        self._nodes: dict[int, _Node] = {}
        self._classpath: str | None = None
        self._lock: int | None = None  # the data_dir's lock, held while started

    # -- addresses ---------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        self._require_started()
        return ",".join(f"{HOST}:{self._nodes[n].port}" for n in self.node_ids)

    @property
    def data_dir(self) -> Path:
        self._require_started()
        assert self._data_dir is not None
        return self._data_dir

    @property
    def replication_factor(self) -> int:
        """RF for topics on this cluster: 3 (or the node count, if fewer)."""
        return min(3, len(self.node_ids))

    @property
    def min_insync_replicas(self) -> int:
        return 2 if len(self.node_ids) >= 3 else 1

    def port(self, node_id: int) -> int:
        return self._node(node_id).port

    def pid(self, node_id: int) -> int:
        proc = self._node(node_id).proc
        if proc is None or proc.poll() is not None:
            raise FootfallError(f"kafka node {node_id} is not running")
        return proc.pid

    def is_running(self, node_id: int) -> bool:
        proc = self._node(node_id).proc
        return proc is not None and proc.poll() is None

    def server_log(self, node_id: int) -> Path:
        """The node's log file (``<data_dir>/node-N/server.log``)."""
        return self._node(node_id).server_log

    def log_tail(self, node_id: int, size: int = 4000) -> str:
        """The last ``size`` bytes of the node's ``server.log`` (for a failing test's report)."""
        path = self._node(node_id).server_log
        try:
            with path.open("rb") as f:
                f.seek(max(0, path.stat().st_size - size))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def metadata(self, timeout: float = 2.0) -> ClusterMetadata | None:
        """The first answer to a Metadata request from any running node, or None."""
        for node in self._nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                answer = kafka_metadata(HOST, node.port, timeout)
                if answer is not None:
                    return answer
        return None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> Self:
        """Format storage if needed, start every node, wait until all are in the metadata.

        Idempotent: nodes already running are left alone.

        Raises:
            StartupError: another process runs Kafka on ``data_dir``, or it holds a cluster of
                another number of nodes.
            FootfallError: Java or Maven missing, or the jars could not be resolved.
            BrokerUnavailableError: the cluster did not come up within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        if self._given_dir is not None and self._lock is None:
            self._claim(self._given_dir.resolve())
        self._classpath = self._classpath or kafka_classpath()
        if self._data_dir is None:
            if self._given_dir is None:
                self._data_dir = Path(tempfile.mkdtemp(prefix="footfall-kafka-"))
            else:
                self._data_dir = self._given_dir.resolve()
        if not self._nodes:
            for node_id in self.node_ids:
                directory = self._data_dir / f"node-{node_id}"
                self._nodes[node_id] = _Node(node_id, *_ports(node_id, directory), directory)
        atexit.register(self.stop)
        try:
            self._format_storage()
            for node_id in self.node_ids:
                if not self.is_running(node_id):
                    self._spawn(self._nodes[node_id])
            self._wait_for(set(self.node_ids), deadline)
        except BaseException:
            self.stop()  # no half-started cluster left behind
            raise
        log.info("kafka cluster ready", extra={"bootstrap": self.bootstrap, "nodes": len(self.node_ids)})
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node: SIGTERM (a clean shutdown), then SIGKILL after ``timeout``. Idempotent.

        All nodes are signalled at once: stopped one by one, the last ones would wait for
        a quorum that is already gone.
        """
        running = [node for node in self._nodes.values() if node.proc is not None]
        for node in running:
            _signal(node, signal.SIGCONT)  # a paused node cannot handle SIGTERM
            _signal(node, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in running:
            _reap(node, max(0.0, deadline - time.monotonic()))
        atexit.unregister(self.stop)
        if self._given_dir is None and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
            self._nodes.clear()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (a crash: no clean shutdown, no leadership handover)."""
        node = self._node(node_id)
        _signal(node, signal.SIGKILL)
        _reap(node, 10.0)

    def stop_node(self, node_id: int, timeout: float = 30.0) -> None:
        """Stop one node cleanly: SIGTERM (it hands its leaderships over first), SIGKILL after ``timeout``."""
        node = self._node(node_id)
        _signal(node, signal.SIGCONT)
        _signal(node, signal.SIGTERM)
        _reap(node, timeout)

    def start_node(self, node_id: int, timeout: float = 120.0) -> None:
        """Start one stopped or killed node again on its durable log dir and same ports;
        return once the cluster's metadata lists it again (registered and unfenced)."""
        node = self._node(node_id)
        if not self.is_running(node_id):
            self._spawn(node)
        self._wait_for({node_id}, time.monotonic() + timeout)

    def pause(self, node_id: int) -> None:
        """SIGSTOP one node: it keeps its sockets open but answers nothing (a hung broker)."""
        _signal(self._node(node_id), signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        _signal(self._node(node_id), signal.SIGCONT)

    # -- internals ---------------------------------------------------------------------

    def _require_started(self) -> None:
        if not self._nodes:
            raise FootfallError("the kafka cluster is not started")

    def _node(self, node_id: int) -> _Node:
        self._require_started()
        try:
            return self._nodes[node_id]
        except KeyError:
            raise FootfallError(f"no kafka node {node_id}; the nodes are {self.node_ids}") from None

    def _claim(self, data_dir: Path) -> None:
        """Hold ``data_dir`` for this cluster; refuse one formatted for another number of nodes."""
        check_directory(data_dir, "--data-dir")
        self._lock = claim(
            data_dir / "footfall-kafka.lock",
            f"another process ({{who}}) runs Kafka on {data_dir}; stop it, or use another data directory",
        )
        formatted = sorted(int(p.parts[-3].removeprefix("node-")) for p in data_dir.glob("node-*/data/meta.properties"))
        if formatted and formatted != self.node_ids:
            os.close(self._lock)
            self._lock = None
            raise StartupError(
                f"{data_dir} holds a {len(formatted)}-node Kafka cluster (nodes {formatted}), not one of "
                f"{len(self.node_ids)}; start it with --nodes {len(formatted)}, or use another data directory"
            )

    def _server_properties(self, node: _Node) -> dict[str, str]:
        rf = str(self.replication_factor)
        min_isr = str(self.min_insync_replicas)
        voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in self._nodes.values())
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "listeners": f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{node.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.log_dir),
            # Durability, as in kafka/docker-compose.yml: every topic (ours and Kafka's
            # internal ones) on RF nodes, min.insync.replicas of them to accept a write.
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "unclean.leader.election.enable": "false",
            "auto.create.topics.enable": "false",
            "num.partitions": "12",
            "group.initial.rebalance.delay.ms": str(self.group_initial_rebalance_delay_ms),
            "log.retention.hours": "168",
        }
        props.update(self.overrides)
        return props

    def _format_storage(self) -> None:
        """Write each node's config; format the storage of nodes never formatted (in parallel)."""
        assert self._data_dir is not None and self._classpath is not None
        id_file = self._data_dir / "cluster.id"
        if not id_file.is_file():
            id_file.write_text(_new_cluster_id())
        cluster_id = id_file.read_text().strip()
        formatting: list[tuple[_Node, subprocess.Popen[str]]] = []
        for node in self._nodes.values():
            node.directory.mkdir(parents=True, exist_ok=True)
            text = "".join(f"{key}={value}\n" for key, value in self._server_properties(node).items())
            node.properties.write_text(text)
            if (node.log_dir / "meta.properties").is_file():
                continue
            cmd = [*self._java(heap="256m"), "kafka.tools.StorageTool", "format"]
            cmd += ["-t", cluster_id, "-c", str(node.properties), "--ignore-formatted"]
            proc = subprocess.Popen(  # noqa: S603 - java from PATH, our own arguments
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            formatting.append((node, proc))
        for node, proc in formatting:
            output, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise BrokerUnavailableError(f"formatting kafka node {node.node_id} failed: {output.strip()[-1000:]}")

    def _java(self, heap: str) -> list[str]:
        assert self._classpath is not None
        return java_command(self._classpath, heap)

    def _spawn(self, node: _Node) -> None:
        with node.server_log.open("ab") as log_file:
            node.proc = spawn(
                [*self._java(self.heap), "kafka.Kafka", str(node.properties)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        log.info("kafka node started", extra={"node_id": node.node_id, "port": node.port, "pid": node.proc.pid})

    def _wait_for(self, node_ids: set[int], deadline: float) -> None:
        """Poll until every node of ``node_ids`` answers Metadata listing them all and a
        controller, and grants a producer id; or raise with the log tails."""
        while time.monotonic() < deadline:
            dead = [n for n in node_ids if not self.is_running(n)]
            if dead:
                break
            # Ask each node itself: a restarted node's old entry can linger in its peers'
            # metadata until its session expires, but the node opens its client listener
            # only once it has caught up and is unfenced again.
            answers = [kafka_metadata(HOST, self._nodes[n].port, timeout=1.0) for n in node_ids]
            if all(a is not None and node_ids <= a.brokers.keys() and a.controller_id >= 0 for a in answers) and all(
                grants_producer_id(HOST, self._nodes[n].port, timeout=1.0) for n in node_ids
            ):
                return
            time.sleep(0.1)
        tails = "\n".join(f"--- node {n}:\n{self.log_tail(n, 1500)}" for n in sorted(node_ids))
        raise BrokerUnavailableError(f"kafka nodes {sorted(node_ids)} did not join the cluster; logs end:\n{tails}")


def _ports(node_id: int, directory: Path) -> tuple[int, int]:
    """The node's client and controller ports: those of its last run on ``directory`` when both are free."""
    last: list[int] = []
    with contextlib.suppress(OSError):
        for line in (directory / "server.properties").read_text().splitlines():
            if line.startswith("listeners="):
                last = [int(address.rsplit(":", 1)[1]) for address in line.removeprefix("listeners=").split(",")]
    if len(last) == 2:
        try:
            for port in last:
                check_listen(HOST, port, "port")
        except StartupError:
            log.warning(
                "the ports of this node's last run are taken: the bootstrap list changes",
                extra={"node_id": node_id, "ports": last},
            )
        else:
            return last[0], last[1]
    return free_port(HOST), free_port(HOST)


def _new_cluster_id() -> str:
    """A KRaft cluster id: a base64url UUID without padding (22 characters). Like Kafka's
    own ``Uuid.randomUuid``, never one starting with ``-``, which a command line reads as a flag."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _signal(node: _Node, signum: signal.Signals) -> None:
    if node.proc is not None and node.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.proc.pid, signum)


def _reap(node: _Node, timeout: float) -> None:
    proc = node.proc
    if proc is None:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("kafka node did not stop in time: killing it", extra={"node_id": node.node_id})
        proc.kill()
        proc.wait()
    node.proc = None
