"""What ``footfall rehearse`` runs: each compose service's command line, localized for loopback.

The compose files (read by :mod:`stack.compose`) say what runs, with which flags and
environment, and how many of each; :class:`Topology` turns each service into a
:class:`ProcessSpec` (command line, log file, port, readiness path) for this machine: its
own interpreter, free loopback ports, files under the run directory. Starting, watching and
stopping them is :class:`stack.rehearsal.Rehearsal`'s job.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol, Self

from footfall.errors import FootfallError, StartupError
from stack import compose
from stack.broker import EmbeddedBroker, free_port
from stack.compose import ROOT, Deployment, Service

__all__ = ["COUNTERPARTS", "HOST", "Brokers", "ProcessSpec", "RehearsalConfig", "Topology"]

HOST: Final = "127.0.0.1"

#: compose service -> what the rehearsal runs for it (tests/deploy/test_rehearse.py checks
#: that every service of both compose files is here).
COUNTERPARTS: Final = {
    "gateway": "python -m gateway, one process per replica",
    "gateway-lb": "Debian's haproxy with deploy/haproxy.cfg rewritten for loopback",
    "sink": "python -m sink, one supervisor per replica, one record directory",
    "dashboard": "python -m dashboard",
    "prometheus": "Debian's prometheus with deploy/prometheus.yml rewritten for loopback",
    "bench": "python -m bench through the balancer (--bench)",
    "kafka-*": "Apache Kafka KRaft nodes through stack.kafka.KafkaCluster",
}


class Brokers(Protocol):
    """What the rehearsal needs of a Kafka cluster (stack.kafka.KafkaCluster's interface)."""

    node_ids: list[int]

    @property
    def bootstrap(self) -> str: ...
    def start(self, timeout: float = ...) -> Any: ...
    def stop(self, timeout: float = ...) -> None: ...
    def kill(self, node_id: int) -> None: ...
    def start_node(self, node_id: int, timeout: float = ...) -> None: ...
    def pid(self, node_id: int) -> int: ...


class _EmbeddedCluster:
    """The embedded broker as a one-node "cluster" (memory only: a killed node loses its data)."""

    def __init__(self, log_path: Path) -> None:
        self.node_ids = [1]
        self._broker = EmbeddedBroker(log_path=log_path)

    @property
    def bootstrap(self) -> str:
        return self._broker.bootstrap

    def start(self, timeout: float = 20.0) -> Self:
        self._broker.start(timeout)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._broker.stop(timeout)

    def kill(self, node_id: int) -> None:
        raise FootfallError("the embedded broker has one node and keeps data in memory: use --kafka apache")

    def start_node(self, node_id: int, timeout: float = 20.0) -> None:
        self.kill(node_id)

    def pid(self, node_id: int) -> int:
        return self._broker.pid


@dataclass(frozen=True, kw_only=True)
class RehearsalConfig:
    """What to run. Counts default to the compose file's ``deploy.replicas``."""

    run_directory: Path
    record_directory: Path | None = None  # default: <run_directory>/records
    kafka: Literal["apache", "embedded"] = "apache"
    kafka_heap: str = "512m"
    gateways: int | None = None
    sinks: int | None = None
    dashboard: bool = True
    prometheus: bool = True
    #: scrape and rule evaluation interval (compose: 15 s); short so a rehearsal sees alerts.
    scrape_interval: str = "2s"
    #: the coordinator's wait before a new group's first assignment (compose: 3000 ms).
    group_initial_rebalance_delay_ms: int | None = None
    root: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class ProcessSpec:
    """One process of the rehearsal: what runs, where it logs, the port its readiness is asked on."""

    name: str  # gateway-1, sink-2, gateway-lb, dashboard, prometheus, bench
    command: list[str]
    log: Path
    port: int
    ready_path: str
    service: Service | None = None  # its compose service (for its environment)
    popen: subprocess.Popen[bytes] | None = None


class Topology:
    """The compose services as :class:`ProcessSpec`\\ s for this machine; see the module docstring."""

    def __init__(self, config: RehearsalConfig) -> None:
        self.config = config
        self.deployment: Deployment = compose.load_deployment(config.root, {**os.environ, **config.env})
        self.run_directory = config.run_directory.resolve()
        self.record_directory = (config.record_directory or self.run_directory / "records").resolve()
        self.log_directory = self.run_directory / "logs"
        d = self.deployment
        self.gateway_count = config.gateways or d.by_role("gateway").replicas
        self.sink_count = config.sinks or d.by_role("sink").replicas
        self._hostnames = [*d.services, *d.kafka]

    def child_env(self, service: Service | None = None) -> dict[str, str]:
        """Our environment, the service's compose environment, the config's, this checkout on the path."""
        env = {**os.environ, **(service.environment if service else {}), **self.config.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.config.root), env.get("PYTHONPATH")]))
        return env

    def kafka(self) -> Brokers:
        """The Kafka nodes of kafka/docker-compose.yml (not started), or the embedded broker."""
        c = self.config
        if c.kafka == "embedded":
            return _EmbeddedCluster(self.log_directory / "kafka.log")
        from stack.kafka import KafkaCluster

        properties = compose.kafka_properties(self.deployment)
        delay = int(properties.pop("group.initial.rebalance.delay.ms", "3000"))
        if c.group_initial_rebalance_delay_ms is not None:
            delay = c.group_initial_rebalance_delay_ms
        return KafkaCluster(
            nodes=len(self.deployment.kafka),
            data_dir=self.run_directory / "kafka",
            heap=c.kafka_heap,
            group_initial_rebalance_delay_ms=delay,
            overrides=properties,
        )

    def _replication(self) -> dict[str, str]:
        return {"--replication-factor": "1"} if self.config.kafka == "embedded" else {}

    def _role(self, role: str, name: str, values: Mapping[str, str], port: int) -> ProcessSpec:
        service = self.deployment.by_role(role)
        command = [sys.executable, "-m", role, *compose.localize(service, values, hostnames=self._hostnames)]
        return ProcessSpec(name, command, self.log_directory / f"{name}.log", port, "/readyz", service)

    def gateway(self, n: int, bootstrap: str) -> ProcessSpec:
        port = free_port(HOST)
        values = {"--brokers": bootstrap, "--host": HOST, "--port": str(port), **self._replication()}
        return self._role("gateway", f"gateway-{n}", values, port)

    def sink(self, n: int, bootstrap: str) -> ProcessSpec:
        port = free_port(HOST)
        values = {
            "--brokers": bootstrap,
            "--record-directory": str(self.record_directory),
            "--metrics-host": HOST,
            "--metrics-port": str(port),
            **self._replication(),
        }
        return self._role("sink", f"sink-{n}", values, port)

    def dashboard(self) -> ProcessSpec:
        port = free_port(HOST)
        values = {
            "--record-directory": str(self.record_directory),
            "--host": HOST,
            "--port": str(port),
            "--state-dir": str(self.run_directory / "dashboard"),
        }
        return self._role("dashboard", "dashboard", values, port)

    def haproxy(self, ingest_port: int, admin_port: int, gateway_ports: list[int], socket: Path) -> ProcessSpec:
        """``gateway-lb``: deploy/haproxy.cfg for loopback, written to the run directory."""
        binary = _require("haproxy", "the balancer is Debian's haproxy: apt-get install haproxy")
        text = compose.haproxy_loopback(
            (self.config.root / "deploy" / "haproxy.cfg").read_text(),
            ingest_port=ingest_port,
            admin_port=admin_port,
            gateways=gateway_ports,
            socket=socket,
            # two descriptors per connection, and some for listeners, checks and logs
            max_connections=(resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 100) // 2,
        )
        cfg = self.run_directory / "haproxy.cfg"
        cfg.write_text(text)
        # -db: stay in the foreground (the process we started is HAProxy itself).
        command = [binary, "-db", "-f", str(cfg)]
        return ProcessSpec("gateway-lb", command, self.log_directory / "gateway-lb.log", admin_port, "/healthz")

    def prometheus(self, targets: Mapping[str, list[str]]) -> ProcessSpec:
        """``prometheus``: deploy/prometheus.yml scraping ``targets`` (job -> host:port), and its alerts."""
        binary = _require("prometheus", "Prometheus is Debian's prometheus package: apt-get install prometheus")
        text = compose.prometheus_loopback(
            (self.config.root / "deploy" / "prometheus.yml").read_text(),
            targets=dict(targets),
            rule_files=[self.config.root / "deploy" / "alerts.yml"],
            interval=self.config.scrape_interval,
        )
        (self.run_directory / "prometheus.yml").write_text(text)
        service = self.deployment.by_image("prometheus")
        port = free_port(HOST)
        values = {
            "--config.file": str(self.run_directory / "prometheus.yml"),
            "--storage.tsdb.path": str(self.run_directory / "prometheus"),
        }
        args: list[str] = []
        for arg in service.command:
            key, _, value = arg.partition("=")
            if key in values:
                args.append(f"{key}={values.pop(key)}")
            elif value.startswith("/"):
                raise FootfallError(f"service 'prometheus': rehearse does not know how to localize {arg!r}")
            else:
                args.append(arg)
        if values:
            raise FootfallError(f"docker-compose.yml service 'prometheus': no {sorted(values)} on its command line")
        args.append(f"--web.listen-address={HOST}:{port}")
        return ProcessSpec(
            "prometheus", [binary, *args], self.log_directory / "prometheus.log", port, "/-/ready", service
        )

    def bench_command(
        self, ingest_url: str, run_json: Path, overrides: Mapping[str, str | None] | None = None
    ) -> list[str]:
        """The compose ``bench`` command line, pointed at ``ingest_url``, writing ``run_json``.

        ``overrides`` replace the values of flags on that line or add flags (None: a flag
        without a value, such as ``--quiet``).
        """
        service = self.deployment.by_role("bench")
        values: dict[str, str | None] = {"--web-service": ingest_url, "--json": str(run_json), **(overrides or {})}
        present = {k: v for k, v in values.items() if k in service.command and v is not None}
        extra = [item for k, v in values.items() if k not in present for item in (k, v) if item is not None]
        return [sys.executable, "-m", "bench", *compose.localize(service, present, hostnames=self._hostnames), *extra]

    def bench(self, ingest_url: str, run_json: Path, overrides: Mapping[str, str | None] | None = None) -> ProcessSpec:
        command = self.bench_command(ingest_url, run_json, overrides)
        return ProcessSpec("bench", command, self.log_directory / "bench.log", 0, "", self.deployment.by_role("bench"))


def _require(tool: str, hint: str) -> str:
    binary = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin")
    if binary is None:
        raise StartupError(f"{tool} not found: {hint}")
    return binary
