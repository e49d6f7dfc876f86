"""The compose deployment running on loopback: start in dependency order, watch, break, stop in reverse.

What docker-compose.yml and kafka/docker-compose.yml deploy, with the same command lines,
environment and replica counts (:mod:`stack.topology` builds them; only addresses change):

1. the Kafka nodes, Apache Kafka in KRaft mode with the compose file's cluster settings
   (``kafka="embedded"`` puts the one-node embedded broker behind the same interface, for a
   machine without Java: replication factor 1 then);
2. ``gateway`` × replicas, the first alone (it creates the topics), then the others;
3. ``gateway-lb``: Debian's ``haproxy`` with deploy/haproxy.cfg rewritten for loopback;
4. ``sink`` × replicas, one consumer group on one record directory;
5. ``dashboard``; 6. ``prometheus`` with deploy/prometheus.yml and deploy/alerts.yml;
7. on request, the ``bench`` through the balancer.

:class:`Rehearsal` is what ``footfall rehearse`` (:mod:`stack.rehearse`) runs and what the
scenario tests drive: kill a replica, add a sink, kill a Kafka node, roll the gateways
(through HAProxy's runtime API, :mod:`stack.balancer`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from footfall import promtext
from footfall.errors import FootfallError, StartupError
from stack.balancer import Balancer
from stack.broker import free_port
from stack.children import StartStop, spawn, stop_process_group
from stack.topology import HOST, Brokers, ProcessSpec, RehearsalConfig, Topology

__all__ = ["Rehearsal", "verify_count"]


class Rehearsal(StartStop):
    """The deployment's processes on loopback; a context manager. See the module docstring."""

    def __init__(self, config: RehearsalConfig) -> None:
        self.config = config
        self.topology = t = Topology(config)
        self.deployment = t.deployment
        self.run_directory, self.record_directory, self.log_directory = (
            t.run_directory,
            t.record_directory,
            t.log_directory,
        )
        self.gateway_count, self.sink_count = t.gateway_count, t.sink_count
        self.processes: dict[str, ProcessSpec] = {}
        self.brokers: Brokers | None = None
        self.ports: dict[str, int] = {}
        self.balancer = Balancer(self.run_directory / "haproxy.sock")
        self._sinks_started = 0

    # -- addresses ---------------------------------------------------------------------------
    @property
    def ingest_url(self) -> str:
        """The balancer's ingest frontend (what clients use)."""
        return f"http://{HOST}:{self.ports['gateway-lb']}"

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
        t = self.topology
        try:
            self.brokers = t.kafka()
            self.brokers.start(timeout)
            bootstrap = self.brokers.bootstrap
            for n in range(1, self.gateway_count + 1):
                self._spawn(t.gateway(n, bootstrap))
                if n == 1:  # the first one creates the topics; the rest start together
                    self._wait_ready("gateway-1", deadline)
            for name in self.names("gateway"):
                self._wait_ready(name, deadline)
            self.ports["gateway-lb"] = free_port(HOST)
            self.ports["gateway-lb-admin"] = free_port(HOST)
            gateway_ports = [self.processes[name].port for name in self.names("gateway")]
            self._spawn(
                t.haproxy(self.ports["gateway-lb"], self.ports["gateway-lb-admin"], gateway_ports, self.haproxy_socket)
            )
            self._wait_ready("gateway-lb", deadline)
            for _ in range(self.sink_count):
                self._spawn(self._next_sink())
            for name in self.names("sink"):
                self._wait_ready(name, deadline)
            if self.config.dashboard:
                self._spawn(t.dashboard())
                self._wait_ready("dashboard", deadline)
            if self.config.prometheus:
                self._spawn(t.prometheus(self._scrape_targets()))
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

    def stop_process_keep(self, name: str, timeout: float = 30.0) -> int:
        """SIGTERM ``name`` and wait for it, keeping its entry (command, port) for :meth:`restart`."""
        return self._terminate(self.processes[name], timeout)

    @staticmethod
    def _terminate(process: ProcessSpec, timeout: float) -> int:
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
        process = self._next_sink()
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

    # -- the balancer ------------------------------------------------------------------------
    @property
    def haproxy_socket(self) -> Path:
        return self.balancer.socket_path

    def haproxy(self, command: str) -> str:
        """One HAProxy runtime-API command over its admin socket; returns the answer."""
        return self.balancer.command(command)

    def backend_servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's view of each gateway: server name -> its ``show stat`` fields."""
        return self.balancer.servers()

    def drain_gateway(self, name: str, timeout: float = 30.0) -> None:
        """Take ``name`` out of rotation, wait until HAProxy has no request on it."""
        self.balancer.drain(name, timeout)

    def wait_backend_up(self, name: str, timeout: float = 30.0) -> None:
        """Wait until HAProxy's health check has put gateway ``name`` back in rotation."""
        self.balancer.wait_up(name, timeout)

    def rolling_restart(self, timeout: float = 120.0) -> None:
        """Restart every gateway, one at a time: drain, SIGTERM (it drains too), start, back in."""
        for name in self.names("gateway"):
            self.balancer.drain(name)
            code = self.stop_process_keep(name)
            if code != 0:
                raise FootfallError(f"{name} exited with code {code} on SIGTERM; log: {self.processes[name].log}")
            self.restart(name, timeout)
            self.balancer.ready(name)
            self.balancer.wait_up(name, timeout)

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
                pages.append(promtext.fetch(f"{self.url(name)}/metrics"))
        return "\n".join(pages)

    def metric(self, role: str, name: str) -> float:
        """Sum of metric ``name`` over every running process of ``role`` (0 for one not answering)."""
        total = 0.0
        for process in self.names(role):
            with contextlib.suppress(OSError):
                total += promtext.total(promtext.fetch(f"{self.url(process)}/metrics"), name)
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

    def child_env(self, service: Any = None) -> dict[str, str]:
        """Our environment, the service's compose environment, the config's, this checkout on the path."""
        return self.topology.child_env(service)

    # -- bench -------------------------------------------------------------------------------
    def bench_command(self, run_json: Path, overrides: Mapping[str, str | None] | None = None) -> list[str]:
        """The compose ``bench`` command line, pointed at the balancer, writing ``run_json``."""
        return self.topology.bench_command(self.ingest_url, run_json, overrides)

    def start_bench(self, run_json: Path, overrides: Mapping[str, str | None] | None = None) -> subprocess.Popen[bytes]:
        process = self.topology.bench(self.ingest_url, run_json, overrides)
        self._spawn(process)
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
        while verify_count(result, "lost") and time.monotonic() < deadline:
            time.sleep(1.0)
            result = self.verify(run_json)
        return result

    # -- internals ---------------------------------------------------------------------------
    def _next_sink(self) -> ProcessSpec:
        assert self.brokers is not None
        self._sinks_started += 1
        return self.topology.sink(self._sinks_started, self.brokers.bootstrap)

    def _scrape_targets(self) -> dict[str, list[str]]:
        return {
            "gateway": [f"{HOST}:{self.processes[n].port}" for n in self.names("gateway")],
            "sink": [f"{HOST}:{self.processes[n].port}" for n in self.names("sink")],
            "dashboard": [f"{HOST}:{self.processes['dashboard'].port}"] if "dashboard" in self.processes else [],
        }

    def _spawn(self, process: ProcessSpec) -> None:
        # A process without a compose service of its own (gateway-lb) gets its role's environment.
        service = process.service or self.deployment.services.get(process.name.rsplit("-", 1)[0])
        self.processes[process.name] = process
        with process.log.open("ab") as log:
            process.popen = spawn(
                process.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.child_env(service),
                cwd=self.run_directory,
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


def verify_count(result: Mapping[str, Any], key: str) -> int:
    """Counter ``key`` of a ``bench verify --json`` result (0 when absent)."""
    return int(result.get(key, 0) or 0)
