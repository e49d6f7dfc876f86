"""``footfall rehearse``: the compose deployment, run for real as local processes on loopback.

What docker-compose.yml and kafka/docker-compose.yml deploy, with the same command lines,
environment and replica counts (read from the files by :mod:`stack.compose`; only addresses
change):

1. the Kafka nodes, Apache Kafka in KRaft mode with the compose file's cluster settings
   (``--kafka embedded`` puts the one-node embedded broker behind the same interface, for a
   machine without Java: replication factor 1 then);
2. ``gateway`` × replicas, the first alone (it creates the topics), then the others;
3. ``gateway-lb``: Debian's ``haproxy`` with deploy/haproxy.cfg rewritten for loopback;
4. ``sink`` × replicas, one consumer group on one record directory;
5. ``dashboard``; 6. ``prometheus`` with deploy/prometheus.yml and deploy/alerts.yml;
7. optionally the ``bench`` through the balancer.

It prints where everything is, runs until ``--duration`` or Ctrl+C, then drains in the
reverse order (bench, gateways, sinks land the rest, the others), runs ``bench verify`` and
prints ``verify: lost=… duplicated=…``. Exit codes are ``footfall up``'s: 0 everything
stopped cleanly and verify found nothing wrong, 1 a process died or stopped uncleanly (or
the bench wrote no run file), 2 bad flags, 3 start-up failed, 4 verify found lost,
duplicated, unexpected, altered, misplaced or out-of-order reports, 130 a second Ctrl+C.

:class:`Rehearsal` is also what the scenario tests drive (kill a replica, add a sink, kill a
Kafka node, roll the gateways).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Final, Literal, Protocol, Self

import msgspec

from footfall.errors import FootfallError, StartupError
from footfall.settings import parse_settings, run_main
from stack.broker import EmbeddedBroker, _die_with_parent, free_port
from stack.compose import (
    ROOT,
    Deployment,
    Service,
    haproxy_loopback,
    kafka_properties,
    load_deployment,
    localize,
    prometheus_loopback,
)
from stack.processes import metric_total, scrape, stop_process_group
from stack.up import EXIT_DATA_LOSS, EXIT_FAILED, EXIT_OK, EXIT_STARTUP

__all__ = [
    "COUNTERPARTS",
    "Rehearsal",
    "RehearsalConfig",
    "RehearseSettings",
    "ResourceSampler",
    "histogram_quantiles",
    "main",
]

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


class _Brokers(Protocol):
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
class _Process:
    name: str  # gateway-1, sink-2, gateway-lb, dashboard, prometheus, bench
    command: list[str]
    log: Path
    port: int
    ready_path: str
    popen: subprocess.Popen[bytes] | None = None


class Rehearsal:
    """The deployment's processes on loopback; a context manager. See the module docstring."""

    def __init__(self, config: RehearsalConfig) -> None:
        self.config = config
        self.deployment: Deployment = load_deployment(config.root, {**os.environ, **config.env})
        self.run_directory = config.run_directory.resolve()
        self.record_directory = (config.record_directory or self.run_directory / "records").resolve()
        self.log_directory = self.run_directory / "logs"
        self.processes: dict[str, _Process] = {}
        self.brokers: _Brokers | None = None
        self.ports: dict[str, int] = {}
        self._sinks_started = 0
        d = self.deployment
        self.gateway_count = config.gateways or d.by_role("gateway").replicas
        self.sink_count = config.sinks or d.by_role("sink").replicas
        self._hostnames = [*d.services, *d.kafka]

    # -- addresses ---------------------------------------------------------------------------
    @property
    def ingest_url(self) -> str:
        """The balancer's ingest frontend (what clients use)."""
        return f"http://{HOST}:{self.ports['gateway-lb']}"

    @property
    def haproxy_socket(self) -> Path:
        return self.run_directory / "haproxy.sock"

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.processes[name].port}"

    def names(self, role: str) -> list[str]:
        """Running processes of ``role`` (``gateway`` -> gateway-1, gateway-2, ...)."""
        return [n for n in self.processes if n.rsplit("-", 1)[0] == role and n.rsplit("-", 1)[-1].isdigit()]

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> Self:
        """Start everything in compose's dependency order, each one ready before the next.

        Raises:
            StartupError: a process exited or was not ready within ``timeout``; the message
                names it and ends with its log.
        """
        for directory in (self.run_directory, self.record_directory, self.log_directory):
            directory.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        try:
            self._start_kafka(timeout)
            for n in range(1, self.gateway_count + 1):
                self._spawn(self._gateway(n))
                if n == 1:  # the first one creates the topics; the rest start together
                    self._wait_ready("gateway-1", deadline)
            for name in self.names("gateway"):
                self._wait_ready(name, deadline)
            self._spawn(self._haproxy())
            self._wait_ready("gateway-lb", deadline)
            for _ in range(self.sink_count):
                self._spawn(self._sink())
            for name in self.names("sink"):
                self._wait_ready(name, deadline)
            if self.config.dashboard:
                self._spawn(self._dashboard())
                self._wait_ready("dashboard", deadline)
            if self.config.prometheus:
                self._write_prometheus_config()
                self._spawn(self._prometheus())
                self._wait_ready("prometheus", deadline)
        except BaseException:
            self.stop(timeout=5.0)
            raise
        return self

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        """Stop in reverse dependency order (bench, gateways drain, sinks land, the rest, Kafka).

        Returns each process's exit code. Idempotent.
        """
        order = ["bench", *self.names("gateway"), "gateway-lb", *self.names("sink"), "dashboard", "prometheus"]
        codes: dict[str, int | None] = {}
        for name in order:
            if name in self.processes:
                codes[name] = self.stop_process(name, timeout)
        for name in list(self.processes):
            codes[name] = self.stop_process(name, timeout)
        if self.brokers is not None:
            self.brokers.stop()
            self.brokers = None
        return codes

    def stop_process(self, name: str, timeout: float = 30.0) -> int | None:
        """SIGTERM ``name``'s process group, wait ``timeout``, then SIGKILL it; its exit code."""
        process = self.processes.pop(name, None)
        if process is None or process.popen is None:
            return None
        return self._terminate(process, timeout)

    @staticmethod
    def _terminate(process: _Process, timeout: float) -> int:
        assert process.popen is not None
        if process.name == "gateway-lb" and process.popen.poll() is None:
            # HAProxy's graceful stop is SIGUSR1 (SIGTERM is its hard stop): finish what is in flight.
            process.popen.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout)
        return stop_process_group(process.popen, timeout)

    def kill(self, name: str) -> None:
        """SIGKILL ``name``'s whole process group (its workers too), as ``kill -9`` would."""
        process = self.processes[name]
        assert process.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, signal.SIGKILL)
        process.popen.wait()

    def restart(self, name: str, timeout: float = 120.0) -> None:
        """Start ``name`` again with the same command line and port; wait until it is ready."""
        process = self.processes[name]
        if process.popen is not None and process.popen.poll() is None:
            raise FootfallError(f"{name} is still running")
        self._spawn(process)
        self._wait_ready(name, time.monotonic() + timeout)

    def add_sink(self, timeout: float = 120.0) -> str:
        """Start one more sink instance in the group; returns its name."""
        process = self._sink()
        self._spawn(process)
        self._wait_ready(process.name, time.monotonic() + timeout)
        return process.name

    def exited(self) -> dict[str, int]:
        """Processes that ended on their own: name -> exit code."""
        return {
            name: code
            for name, p in self.processes.items()
            if p.popen is not None and (code := p.popen.poll()) is not None
        }

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the balancer's runtime API ----------------------------------------------------------
    def haproxy(self, command: str) -> str:
        """One HAProxy runtime-API command over its admin socket; returns the answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(str(self.haproxy_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def backend_servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's view of each gateway: server name -> its ``show stat`` fields."""
        lines = self.haproxy("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {r["svname"]: r for r in rows if r.get("pxname") == "gateways" and r["svname"].startswith("gateway-")}

    def drain_gateway(self, name: str, timeout: float = 30.0) -> None:
        """Take ``name`` out of rotation (``state drain``), wait until HAProxy has no request on it."""
        self.haproxy(f"set server gateways/{name} state drain")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.backend_servers()[name]
            if server["status"] in {"DRAIN", "DRAIN (agent)"} and server["scur"] in {"0", ""}:
                return
            time.sleep(0.1)
        raise FootfallError(f"{name} still had requests in flight after {timeout:g}s of draining")

    def rolling_restart(self, timeout: float = 120.0) -> None:
        """Restart every gateway, one at a time: drain, SIGTERM (it drains too), start, back in."""
        for name in self.names("gateway"):
            self.drain_gateway(name)
            code = self.stop_process_keep(name)
            if code != 0:
                raise FootfallError(f"{name} exited with code {code} on SIGTERM; log: {self.processes[name].log}")
            self.restart(name, timeout)
            self.haproxy(f"set server gateways/{name} state ready")
            self.wait_backend_up(name, timeout)

    def stop_process_keep(self, name: str, timeout: float = 30.0) -> int:
        """SIGTERM ``name`` and wait for it, keeping its entry (command, port) for :meth:`restart`."""
        return self._terminate(self.processes[name], timeout)

    def wait_backend_up(self, name: str, timeout: float = 30.0) -> None:
        """Wait until HAProxy's health check has put gateway ``name`` back in rotation."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.backend_servers()[name]["status"] == "UP":
                return
            time.sleep(0.1)
        raise FootfallError(f"HAProxy did not take {name} back within {timeout:g}s")

    # -- metrics -----------------------------------------------------------------------------
    def group_leaders(self) -> dict[str, list[int]]:
        """role -> pids of its process-group leaders (Kafka nodes under ``kafka``)."""
        out: dict[str, list[int]] = {}
        for name, process in list(self.processes.items()):
            if process.popen is not None and process.popen.poll() is None:
                out.setdefault(name.rsplit("-", 1)[0] if name[-1].isdigit() else name, []).append(process.popen.pid)
        if self.brokers is not None:
            pids = []
            for node in self.brokers.node_ids:
                with contextlib.suppress(FootfallError):
                    pids.append(self.brokers.pid(node))
            out["kafka"] = pids
        return out

    def scrape_all(self, role: str) -> str:
        """The /metrics pages of every running process of ``role``, concatenated."""
        pages = []
        for name in self.names(role):
            with contextlib.suppress(OSError):
                pages.append(scrape(f"{self.url(name)}/metrics"))
        return "\n".join(pages)

    def metric(self, role: str, name: str) -> float:
        """Sum of metric ``name`` over every running process of ``role`` (0 for one not answering)."""
        total = 0.0
        for process in self.names(role):
            with contextlib.suppress(OSError):
                total += metric_total(scrape(f"{self.url(process)}/metrics"), name)
        return total

    def accepted(self) -> float:
        return self.metric("gateway", "footfall_gateway_reports_accepted_total")

    def landed(self) -> float:
        return self.metric("sink", "footfall_sink_records_written_total")

    def wait_counters_settled(self, timeout: float = 5.0) -> bool:
        """Wait until the sinks' landed counter has caught up with the gateways' accepted one.

        Each worker publishes its counters about once a second, so right after the files are
        complete the counters can lag a moment (only for display: ``bench verify`` is the oracle).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.landed() >= self.accepted():
                return True
            time.sleep(0.3)
        return False

    def prometheus_api(self, path: str, **params: str) -> Any:
        """GET Prometheus' HTTP API (``/api/v1/...``); returns the ``data`` field."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url('prometheus')}{path}{query}", timeout=5.0) as response:  # noqa: S310
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise FootfallError(f"prometheus {path}: {body}")
        return body["data"]

    def log_tail(self, name: str, size: int = 3000) -> str:
        path = self.log_directory / f"{name}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else "(no log)"

    def child_env(self, service: Service | None = None) -> dict[str, str]:
        """Our environment, the service's compose environment, the config's, this checkout on the path."""
        env = {**os.environ, **(service.environment if service else {}), **self.config.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.config.root), env.get("PYTHONPATH")]))
        return env

    # -- bench -------------------------------------------------------------------------------
    def bench_command(self, run_json: Path, overrides: Mapping[str, str | None] | None = None) -> list[str]:
        """The compose ``bench`` command line, pointed at the balancer, writing ``run_json``.

        ``overrides`` replace the values of flags on that line or add flags (None: a flag
        without a value, such as ``--quiet``).
        """
        service = self.deployment.by_role("bench")
        values: dict[str, str | None] = {"--web-service": self.ingest_url, "--json": str(run_json), **(overrides or {})}
        present = {k: v for k, v in values.items() if k in service.command and v is not None}
        extra = [item for k, v in values.items() if k not in present for item in (k, v) if item is not None]
        return [sys.executable, "-m", "bench", *localize(service, present, hostnames=self._hostnames), *extra]

    def start_bench(self, run_json: Path, overrides: Mapping[str, str | None] | None = None) -> subprocess.Popen[bytes]:
        process = _Process("bench", self.bench_command(run_json, overrides), self.log_directory / "bench.log", 0, "")
        self._spawn(process, service=self.deployment.by_role("bench"))
        assert process.popen is not None
        return process.popen

    def verify(self, run_json: Path) -> dict[str, Any]:
        """``bench verify`` of ``run_json`` against the record directory; its JSON result."""
        out = self.run_directory / f"{run_json.stem}.verify.json"
        subprocess.run(  # noqa: S603 - our own interpreter and module
            [
                *(sys.executable, "-m", "bench", "verify", str(run_json)),
                *("--record-directory", str(self.record_directory), "--json", str(out)),
            ],
            capture_output=True,
            check=False,
            env=self.child_env(),
            timeout=300,
        )
        if not out.exists():
            raise FootfallError(f"bench verify wrote no result for {run_json}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    def wait_verified(self, run_json: Path, timeout: float = 60.0) -> dict[str, Any]:
        """Poll ``bench verify`` until nothing acknowledged is missing (the sinks caught up)."""
        deadline = time.monotonic() + timeout
        result = self.verify(run_json)
        while _count(result, "lost") and time.monotonic() < deadline:
            time.sleep(1.0)
            result = self.verify(run_json)
        return result

    # -- building each process ---------------------------------------------------------------
    def _start_kafka(self, timeout: float) -> None:
        c = self.config
        if c.kafka == "embedded":
            self.brokers = _EmbeddedCluster(self.log_directory / "kafka.log")
        else:
            from stack.kafka import KafkaCluster

            properties = kafka_properties(self.deployment)
            delay = int(properties.pop("group.initial.rebalance.delay.ms", "3000"))
            if c.group_initial_rebalance_delay_ms is not None:
                delay = c.group_initial_rebalance_delay_ms
            self.brokers = KafkaCluster(
                nodes=len(self.deployment.kafka),
                data_dir=self.run_directory / "kafka",
                heap=c.kafka_heap,
                group_initial_rebalance_delay_ms=delay,
                overrides=properties,
            )
        self.brokers.start(timeout)

    def _replication(self) -> dict[str, str]:
        return {"--replication-factor": "1"} if self.config.kafka == "embedded" else {}

    def _gateway(self, n: int) -> _Process:
        service = self.deployment.by_role("gateway")
        assert self.brokers is not None
        port = free_port(HOST)
        values = {"--brokers": self.brokers.bootstrap, "--host": HOST, "--port": str(port), **self._replication()}
        command = [sys.executable, "-m", "gateway", *localize(service, values, hostnames=self._hostnames)]
        return _Process(f"gateway-{n}", command, self.log_directory / f"gateway-{n}.log", port, "/readyz")

    def _sink(self) -> _Process:
        service = self.deployment.by_role("sink")
        assert self.brokers is not None
        self._sinks_started += 1
        port = free_port(HOST)
        values = {
            "--brokers": self.brokers.bootstrap,
            "--record-directory": str(self.record_directory),
            "--metrics-host": HOST,
            "--metrics-port": str(port),
            **self._replication(),
        }
        command = [sys.executable, "-m", "sink", *localize(service, values, hostnames=self._hostnames)]
        name = f"sink-{self._sinks_started}"
        return _Process(name, command, self.log_directory / f"{name}.log", port, "/readyz")

    def _dashboard(self) -> _Process:
        service = self.deployment.by_role("dashboard")
        port = free_port(HOST)
        values = {
            "--record-directory": str(self.record_directory),
            "--host": HOST,
            "--port": str(port),
            "--state-dir": str(self.run_directory / "dashboard"),
        }
        command = [sys.executable, "-m", "dashboard", *localize(service, values, hostnames=self._hostnames)]
        return _Process("dashboard", command, self.log_directory / "dashboard.log", port, "/readyz")

    def _haproxy(self) -> _Process:
        binary = _require("haproxy", "the balancer is Debian's haproxy: apt-get install haproxy")
        self.ports["gateway-lb"] = free_port(HOST)
        self.ports["gateway-lb-admin"] = admin = free_port(HOST)
        text = haproxy_loopback(
            (self.config.root / "deploy" / "haproxy.cfg").read_text(),
            ingest_port=self.ports["gateway-lb"],
            admin_port=admin,
            gateways=[self.processes[name].port for name in self.names("gateway")],
            socket=self.haproxy_socket,
            # two descriptors per connection, and some for listeners, checks and logs
            max_connections=(resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 100) // 2,
        )
        cfg = self.run_directory / "haproxy.cfg"
        cfg.write_text(text)
        # -db: stay in the foreground (the process we started is HAProxy itself).
        return _Process(
            "gateway-lb", [binary, "-db", "-f", str(cfg)], self.log_directory / "gateway-lb.log", admin, "/healthz"
        )

    def _write_prometheus_config(self) -> None:
        targets = {
            "gateway": [f"{HOST}:{self.processes[n].port}" for n in self.names("gateway")],
            "sink": [f"{HOST}:{self.processes[n].port}" for n in self.names("sink")],
            "dashboard": [f"{HOST}:{self.processes['dashboard'].port}"] if "dashboard" in self.processes else [],
        }
        text = prometheus_loopback(
            (self.config.root / "deploy" / "prometheus.yml").read_text(),
            targets=targets,
            rule_files=[self.config.root / "deploy" / "alerts.yml"],
            interval=self.config.scrape_interval,
        )
        (self.run_directory / "prometheus.yml").write_text(text)

    def _prometheus(self) -> _Process:
        binary = _require("prometheus", "Prometheus is Debian's prometheus package: apt-get install prometheus")
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
        return _Process("prometheus", [binary, *args], self.log_directory / "prometheus.log", port, "/-/ready")

    def _spawn(self, process: _Process, service: Service | None = None) -> None:
        role = process.name.rsplit("-", 1)[0]
        service = service or self.deployment.services.get(role)
        self.processes[process.name] = process
        with process.log.open("ab") as log:
            process.popen = subprocess.Popen(  # noqa: S603 - our own interpreter, haproxy, prometheus
                process.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.child_env(service),
                cwd=self.run_directory,
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )

    def _wait_ready(self, name: str, deadline: float) -> None:
        process = self.processes[name]
        assert process.popen is not None
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise StartupError(
                    f"{name} exited with code {process.popen.returncode} while starting; log: {process.log}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"http://{HOST}:{process.port}{process.ready_path}", timeout=1.0) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.1)
        raise StartupError(f"{name} was not ready in time; log: {process.log}")


def _require(tool: str, hint: str) -> str:
    binary = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin")
    if binary is None:
        raise StartupError(f"{tool} not found: {hint}")
    return binary


def _count(result: Mapping[str, Any], key: str) -> int:
    return int(result.get(key, 0) or 0)


# -- measurement -----------------------------------------------------------------------------

_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float, int] | None:
    """(process group, CPU seconds user+system, peak RSS in KiB) of ``pid``, or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
    hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS, hwm


class ResourceSampler:
    """CPU seconds and peak RSS per role, sampled from /proc every ``interval`` seconds.

    A role's processes are every process in the groups its leaders head (a gateway's or a
    sink's workers too). CPU counts from :meth:`start`; a process that exits between two
    samples loses at most its last ``interval`` of CPU. Peak RSS is the sum of each
    process's VmHWM, so pages forked workers share are counted once per process: an upper bound.
    """

    def __init__(self, leaders: Callable[[], dict[str, list[int]]], interval: float = 0.5) -> None:
        self._leaders = leaders
        self._interval = interval
        self._baseline: dict[int, float] = {}
        self._last: dict[int, tuple[str, float, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)

    def _sample(self) -> dict[int, tuple[str, float, int]]:
        groups = {pid: role for role, pids in self._leaders().items() for pid in pids}
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) and stat[0] in groups:
                found[int(entry.name)] = (groups[stat[0]], stat[1], stat[2])
        return found

    def start(self) -> Self:
        self._baseline = {pid: cpu for pid, (_, cpu, _) in self._sample().items()}
        self._thread.start()
        return self

    def _merge(self) -> None:
        # max: an exited process not yet reaped (a zombie) reports no memory and may report less CPU
        for pid, (role, cpu, hwm) in self._sample().items():
            _, old_cpu, old_hwm = self._last.get(pid, (role, 0.0, 0))
            self._last[pid] = (role, max(cpu, old_cpu), max(hwm, old_hwm))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._merge()

    def stop(self) -> dict[str, dict[str, float]]:
        """role -> {"cpu_s": CPU seconds since start, "peak_rss_mb": summed VmHWM}."""
        self._stop.set()
        self._thread.join(5)
        self._merge()
        out: dict[str, dict[str, float]] = {}
        for pid, (role, cpu, hwm) in self._last.items():
            figures = out.setdefault(role, {"cpu_s": 0.0, "peak_rss_mb": 0.0})
            figures["cpu_s"] += cpu - self._baseline.get(pid, 0.0)
            figures["peak_rss_mb"] += hwm / 1024
        return out


def histogram_quantiles(text: str, name: str, quantiles: Sequence[float] = (0.5, 0.99)) -> dict[str, float]:
    """Quantiles (bucket upper bounds) of histogram ``name`` over every label set in ``text``."""
    counts: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            le = float("inf") if bound == "+Inf" else float(bound)
            counts[le] = counts.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    bounds = sorted(counts)
    total = counts[bounds[-1]] if bounds else 0.0
    out = {}
    for q in quantiles:
        out[f"p{q * 100:g}"] = next((b for b in bounds if total and counts[b] >= q * total), float("nan"))
    out["count"] = total
    return out


# -- the command ---------------------------------------------------------------------------


class RehearseSettings(msgspec.Struct, frozen=True, kw_only=True):
    record_directory: Annotated[
        str, msgspec.Meta(description="where the sinks land reports (a fresh directory for a clean verify)")
    ] = "footfall-rehearsal/records"
    run_directory: Annotated[
        str,
        msgspec.Meta(description="logs, generated configs, Kafka's and Prometheus' data (default: beside the records)"),
    ] = ""
    duration: Annotated[float, msgspec.Meta(ge=0, description="stop after this many seconds (0: until Ctrl+C)")] = 0.0
    kafka: Annotated[
        Literal["apache", "embedded"],
        msgspec.Meta(
            description="apache: three KRaft nodes as in kafka/docker-compose.yml; embedded: one memory-only broker"
        ),
    ] = "apache"
    kafka_heap: Annotated[str, msgspec.Meta(description="JVM heap per Kafka node (compose: 1g)")] = "512m"
    bench: Annotated[bool, msgspec.Meta(description="drive the compose bench through the balancer")] = True
    concurrent_clients: Annotated[
        int, msgspec.Meta(ge=0, description="bench clients (0: the compose file's --concurrent-clients)")
    ] = 0
    prometheus: Annotated[
        bool, msgspec.Meta(description="run Prometheus with deploy/prometheus.yml and its alerts")
    ] = True
    scrape_interval: Annotated[
        str, msgspec.Meta(description="Prometheus scrape/evaluation interval (compose: 15s)")
    ] = "2s"
    gateways: Annotated[int, msgspec.Meta(ge=0, description="gateway replicas (0: the compose file's)")] = 0
    sinks: Annotated[int, msgspec.Meta(ge=0, description="sink instances (0: the compose file's)")] = 0
    report_interval: Annotated[
        float,
        msgspec.Meta(description="seconds between a bench client's days; 0 = closed loop (-1: the compose file's)"),
    ] = -1.0
    measure_json: Annotated[
        str,
        msgspec.Meta(description="write throughput, e2e latency, CPU and peak RSS per role of the bench run here"),
    ] = ""


def _status_line(rehearsal: Rehearsal) -> str:
    return f"accepted {rehearsal.accepted():>12,.0f}   landed {rehearsal.landed():>12,.0f}"


def _print_where(r: Rehearsal, records: Path) -> None:
    assert r.brokers is not None
    pids = " ".join(str(r.brokers.pid(n)) for n in r.brokers.node_ids)
    kind = "Apache Kafka KRaft" if r.config.kafka == "apache" else "embedded, memory only"
    print(f"  kafka        {r.brokers.bootstrap}  ({kind}, pids {pids})")
    print(f"  gateway-lb   {r.ingest_url}/api/visit/v1   http://{HOST}:{r.ports['gateway-lb-admin']}/stats")
    for name in r.names("gateway"):
        print(f"  {name:<12} {r.url(name)}/metrics")
    for name in r.names("sink"):
        print(f"  {name:<12} {r.url(name)}/metrics")
    if "dashboard" in r.processes:
        print(f"  dashboard    {r.url('dashboard')}/")
    if "prometheus" in r.processes:
        print(f"  prometheus   {r.url('prometheus')}/alerts")
    print(f"  records      {records}")
    print(f"  logs         {r.log_directory}")


def run(settings: RehearseSettings) -> int:
    records = Path(settings.record_directory).resolve()
    run_directory = Path(settings.run_directory).resolve() if settings.run_directory else records.parent / "run"
    config = RehearsalConfig(
        run_directory=run_directory,
        record_directory=records,
        kafka=settings.kafka,
        kafka_heap=settings.kafka_heap,
        prometheus=settings.prometheus,
        scrape_interval=settings.scrape_interval,
        gateways=settings.gateways or None,
        sinks=settings.sinks or None,
    )
    stop = threading.Event()
    interrupts = 0

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt  # second Ctrl+C: stop waiting politely
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    rehearsal = Rehearsal(config)
    print(
        f"footfall rehearse: {len(rehearsal.deployment.kafka)} Kafka nodes, {rehearsal.gateway_count} gateways "
        f"behind haproxy, {rehearsal.sink_count} sinks, dashboard, prometheus ...",
        flush=True,
    )
    run_json = run_directory / f"bench-{int(time.time())}.json"
    bench: subprocess.Popen[bytes] | None = None
    sampler: ResourceSampler | None = None
    bench_started = 0.0
    healthy = True
    try:
        rehearsal.start()
        _print_where(rehearsal, records)
        if settings.bench:
            overrides: dict[str, str | None] = {"--duration": str(settings.duration), "--quiet": None}
            if settings.concurrent_clients:
                overrides["--concurrent-clients"] = str(settings.concurrent_clients)
            if settings.report_interval >= 0:
                overrides["--report-interval"] = str(settings.report_interval)
            sampler = ResourceSampler(rehearsal.group_leaders).start() if settings.measure_json else None
            bench_started = time.monotonic()
            bench = rehearsal.start_bench(run_json, overrides)
            print(f"  bench        through gateway-lb; {run_json}")
        print("Ctrl+C drains and stops everything.", flush=True)
        started = last_shown = time.monotonic()
        tty = sys.stdout.isatty()  # rewrite the line in place on a terminal; plain lines in a log
        while not stop.wait(1.0):
            if tty:
                print(f"\r  {_status_line(rehearsal)}", end="", flush=True)
            elif time.monotonic() - last_shown >= 5.0:
                print(f"  {_status_line(rehearsal)}", flush=True)
                last_shown = time.monotonic()
            died = {n: c for n, c in rehearsal.exited().items() if n != "bench"}
            if died:
                print(f"\nexited on their own: {died}; logs in {rehearsal.log_directory}")
                healthy = False
                break
            # The bench stops itself after --duration (and then writes its ledger); without one, stop here.
            grace = 0.0 if bench is None else 120.0
            if settings.duration and time.monotonic() - started >= settings.duration + grace:
                break
            if bench is not None and bench.poll() is not None:
                break
        print("\nstopping: bench, gateways (drain), sinks (land the rest), the others, Kafka ...", flush=True)
        if bench is not None:
            if bench.poll() is None:
                bench.send_signal(signal.SIGINT)  # the bench's own graceful stop: finish, write the ledger
                with contextlib.suppress(subprocess.TimeoutExpired):
                    bench.wait(60.0)
            code = rehearsal.stop_process("bench", 10.0)
            healthy &= code in (0, None)
        if bench is not None and run_json.exists():
            if sampler is not None:
                _measure(rehearsal, sampler, run_json, bench_started, Path(settings.measure_json))
            rehearsal.wait_verified(run_json, timeout=60.0)
            rehearsal.wait_counters_settled(timeout=5.0)
        final = _status_line(rehearsal)
        codes = rehearsal.stop()
        print(f"  {final}")
        print("  exit codes: " + ", ".join(f"{name}={code}" for name, code in codes.items()))
        healthy &= all(code == 0 for code in codes.values())
        if bench is None or not run_json.exists():
            print("verify: skipped (no bench run: --bench drives a load and checks it)")
            return EXIT_OK if healthy and bench is None else EXIT_FAILED
        result = rehearsal.verify(run_json)
        keys = ("lost", "duplicated", "unexpected", "altered", "misplaced", "out_of_order", "acknowledged")
        print("verify: " + " ".join(f"{key}={_count(result, key)}" for key in keys))
        if result.get("ok") is not True:
            return EXIT_DATA_LOSS
        return EXIT_OK if healthy else EXIT_FAILED
    except StartupError as exc:
        print(f"\nfootfall rehearse: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except FootfallError as exc:
        print(f"\nfootfall rehearse failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        rehearsal.stop(timeout=5.0)


def _measure(r: Rehearsal, sampler: ResourceSampler, run_json: Path, started: float, out: Path) -> None:
    """After the bench: wait until all it got acknowledged has landed, then write the figures.

    Landed/s is acknowledged reports over bench start -> the sinks' counter reaching them
    (counters are published about once a second: ±1 s). CPU and peak RSS cover the same window.
    """
    summary = json.loads(run_json.read_text())
    acked = int(summary["counts"]["reports_acked"])
    bench_elapsed = float(summary["elapsed_s"])
    deadline = time.monotonic() + 120.0
    while r.landed() < acked and time.monotonic() < deadline:
        time.sleep(0.2)
    landed_after = time.monotonic() - started
    roles = sampler.stop()
    instances = {role: len(pids) for role, pids in r.group_leaders().items()}
    figures = {
        "topology": {
            "kafka": r.config.kafka,
            "kafka_nodes": len(r.brokers.node_ids) if r.brokers else 0,
            "gateways": r.gateway_count,
            "sinks": r.sink_count,
        },
        "bench_settings": summary["settings"],
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "reports_acknowledged": acked,
        "bench_elapsed_s": bench_elapsed,
        "acknowledged_per_s": acked / bench_elapsed if bench_elapsed else 0.0,
        "landed_per_s": acked / landed_after,
        "bench_latency_ms": summary["latency_ms"],
        "e2e_latency_s": histogram_quantiles(r.scrape_all("sink"), "footfall_sink_e2e_latency_seconds"),
        "ack_latency_s": histogram_quantiles(r.scrape_all("gateway"), "footfall_gateway_produce_ack_seconds"),
        "roles": {
            role: {
                **values,
                "instances": instances.get(role, 0),
                "cpu_ms_per_1k_reports": 1000 * values["cpu_s"] / (acked / 1000) if acked else 0.0,
            }
            for role, values in sorted(roles.items())
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    e2e = figures["e2e_latency_s"]
    print(
        f"\n  measured: {figures['acknowledged_per_s']:,.0f} acknowledged/s, {figures['landed_per_s']:,.0f} landed/s; "
        f"e2e p50 <= {e2e['p50']}s p99 <= {e2e['p99']}s; {out}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``footfall rehearse`` entry point."""

    def go() -> int:
        settings = parse_settings(
            RehearseSettings,
            argv,
            prog="footfall rehearse",
            description="Run the compose deployment (docker-compose.yml, kafka/docker-compose.yml) as local "
            "processes on loopback: Kafka nodes, gateways behind haproxy, sinks, dashboard, prometheus, "
            "and a bench load; then verify what landed.",
            env_prefix="FOOTFALL_REHEARSE_",
        )
        return run(settings)

    return run_main(go)
