"""Run the whole pipeline as real processes: broker, gateway, sink, dashboard.

``Stack`` is what ``footfall up``, the integration and fault tests, and ``perf`` share.
Each role runs as ``python -m <role>`` in its own session (so it and its workers can be
signalled as a group), dies with this process (``PR_SET_PDEATHSIG``), logs to a file,
and counts as started only once its ``/readyz`` answers 200 *and* the socket listening on
its port belongs to its own session (``/proc``): a server someone else runs on that port
is never taken for ours. A role that exits, never becomes ready, or finds its port taken
fails the start at once with a :class:`RoleStartError`: one line naming the role, the port
or the cause, and the log file. :meth:`Stack.exited` tells a supervisor which role died
later on.

Stop order is the reverse of start: the gateway drains first (nothing new arrives),
then the sink lands what is left, then the dashboard and the broker go.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Self

from footfall import promtext
from footfall.errors import FootfallError, StartupError
from footfall.preflight import check_listen, describe_pid, listeners
from stack.broker import EmbeddedBroker, free_port
from stack.children import StartStop, log_cause, session_of, spawn, stop_process_group

__all__ = ["ROLES", "RoleStartError", "Stack", "StackConfig"]

ROLES: Final = ("gateway", "sink", "dashboard")


class RoleStartError(StartupError):
    """A role did not start: it exited, never became ready, or its port is someone else's.

    Attributes:
        role: ``gateway``, ``sink`` or ``dashboard``.
        log_path: the role's log file (None if it was never started).
    """

    def __init__(self, role: str, message: str, log_path: Path | None = None) -> None:
        super().__init__(f"{role}: {message}" + (f"; log: {log_path}" if log_path else ""))
        self.role = role
        self.log_path = log_path


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """What to run. ``brokers=None`` starts the embedded broker."""

    record_directory: Path
    brokers: str | None = None
    host: str = "127.0.0.1"
    visit_topic: str = "visit"
    activity_topic: str = "activity"
    group: str = "footfall-sink"
    partitions: int = 4
    gateway_workers: int = 2
    sink_workers: int = 2
    dashboard: bool = True
    log_directory: Path | None = None
    gateway_module: str = "gateway"  # run as `python -m` with the gateway's flags (perf: its per-report reference)
    gateway_args: Sequence[str] = ()
    sink_args: Sequence[str] = ()
    dashboard_args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # role -> port; free ports otherwise
    port_flags: dict[str, str] = field(default_factory=dict)  # role -> the flag that sets its port, for messages


class Stack(StartStop):
    """The pipeline's processes; a context manager. See the module docstring."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = config.brokers or ""
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.log_directory = config.log_directory or Path(tempfile.mkdtemp(prefix="footfall-logs-"))

    # -- addresses -------------------------------------------------------------------------
    @property
    def gateway_url(self) -> str:
        return f"http://{self.config.host}:{self.ports['gateway']}"

    @property
    def sink_url(self) -> str:
        return f"http://{self.config.host}:{self.ports['sink']}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.config.host}:{self.ports['dashboard']}"

    def url(self, role: str) -> str:
        return f"http://{self.config.host}:{self.ports[role]}"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> Self:
        """Start every process and wait until each is ready.

        Raises:
            RoleStartError: a role exited, did not become ready within ``timeout``, or its
                port is held by a process it did not start (one line, with the log's path).
            StartupError, BrokerUnavailableError: the embedded broker did not start.
        """
        self.log_directory.mkdir(parents=True, exist_ok=True)
        self.config.record_directory.mkdir(parents=True, exist_ok=True)
        try:
            if self.config.brokers is None:
                # Kept before it starts, so that an interrupted start stops it below.
                self.broker = EmbeddedBroker(log_path=self.log_directory / "broker.log")
                self.bootstrap = self.broker.start().bootstrap
            self.start_role("gateway", timeout)
            self.start_role("sink", timeout)
            if self.config.dashboard:
                self.start_role("dashboard", timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def command(self, role: str) -> list[str]:
        """The command line that starts ``role`` (ports already chosen)."""
        c = self.config
        port = self.ports[role]
        if role == "gateway":
            args = [
                "--brokers",
                self.bootstrap,
                "--host",
                c.host,
                "--port",
                str(port),
                "--workers",
                str(c.gateway_workers),
                "--visit-topic",
                c.visit_topic,
                "--activity-topic",
                c.activity_topic,
                "--partitions",
                str(c.partitions),
                "--replication-factor",
                "1",
                *c.gateway_args,
            ]
        elif role == "sink":
            args = [
                "--brokers",
                self.bootstrap,
                "--groups",
                f"{c.group}:{c.visit_topic}",
                "--groups",
                f"{c.group}:{c.activity_topic}",
                "--concurrent-count",
                str(c.sink_workers),
                "--record-directory",
                str(c.record_directory),
                "--metrics-host",
                c.host,
                "--metrics-port",
                str(port),
                *c.sink_args,
            ]
        elif role == "dashboard":
            args = [
                "--record-directory",
                str(c.record_directory),
                "--host",
                c.host,
                "--port",
                str(port),
                "--visit-topic",
                c.visit_topic,
                "--activity-topic",
                c.activity_topic,
                *c.dashboard_args,
            ]
        else:
            raise FootfallError(f"unknown role {role!r}")
        return [sys.executable, "-m", c.gateway_module if role == "gateway" else role, *args]

    def start_role(self, role: str, timeout: float = 60.0) -> subprocess.Popen[bytes]:
        """Start (or restart) one role and wait until it is ready (see the module docstring)."""
        fixed = self.config.ports.get(role)
        if fixed and role not in self.processes:
            flag = self.config.port_flags.get(role, "port")
            try:
                check_listen(self.config.host, fixed, flag)
            except StartupError as exc:
                raise RoleStartError(role, str(exc)) from exc
        self.ports.setdefault(role, fixed or free_port(self.config.host))
        env = self.child_env()
        self.log_directory.mkdir(parents=True, exist_ok=True)
        log_path = self.log_directory / f"{role}.log"
        with log_path.open("ab") as log_file:
            proc = spawn(
                self.command(role), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env
            )
        self.processes[role] = proc
        self.wait_ready(role, timeout)
        return proc

    def child_env(self) -> dict[str, str]:
        """Environment for a child process: ours, the config's, and this checkout on the path."""
        env = {**os.environ, **self.config.env}
        root = str(Path(__file__).resolve().parents[1])  # so `python -m <role>` works from a checkout
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        return env

    def wait_ready(self, role: str, timeout: float = 60.0) -> None:
        """Poll until ``role`` answers ``/readyz`` with 200 from a socket of its own session.

        Raises:
            RoleStartError: it exited, another process serves its port, or ``timeout`` passed.
        """
        proc = self.processes[role]
        port = self.ports[role]
        log_path = self.log_path(role)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                cause = log_cause(log_path) or "no output"
                raise RoleStartError(role, f"exited with code {proc.returncode} at start-up: {cause}", log_path)
            sessions = self._listener_sessions(role)  # one /proc scan per round
            foreign = {pid for pid, sid in (sessions or {}).items() if sid is not None and sid != proc.pid}
            if foreign:
                holders = ", ".join(describe_pid(pid) for pid in sorted(foreign))
                flag = self.config.port_flags.get(role, "port")
                raise RoleStartError(
                    role,
                    f"{self.config.host}:{port} is also served by {holders}, not started here; "
                    f"stop it or pick another {flag}",
                    log_path,
                )
            if sessions is None or proc.pid in sessions.values():
                with (
                    contextlib.suppress(OSError, urllib.error.URLError),
                    urllib.request.urlopen(f"{self.url(role)}/readyz", timeout=1.0) as response,  # noqa: S310
                ):
                    if response.status == 200:
                        return
            time.sleep(0.1)
        cause = log_cause(log_path)
        last = f" (last log line: {cause})" if cause else ""
        raise RoleStartError(role, f"not ready on {self.config.host}:{port} within {timeout:g}s{last}", log_path)

    def _listener_sessions(self, role: str) -> dict[int, int | None] | None:
        """pid -> session of every process listening on ``role``'s port; None without /proc."""
        if not Path("/proc/net/tcp").exists():
            return None
        return {pid: session_of(pid) for pid in listeners(self.ports[role])}

    def log_path(self, role: str) -> Path:
        """The file ``role`` (or ``broker``) logs to."""
        return self.log_directory / f"{role}.log"

    def exited(self) -> dict[str, int]:
        """Roles (and the embedded broker) that have exited since they started: name -> exit code."""
        codes = {role: proc.returncode for role, proc in self.processes.items() if proc.poll() is not None}
        if self.broker is not None and self.broker.returncode is not None:
            codes["broker"] = self.broker.returncode
        return codes

    def log_tail(self, role: str, size: int = 3000) -> str:
        path = self.log_directory / f"{role}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else "(no log)"

    def signal(self, role: str, signum: int) -> None:
        """Send ``signum`` to ``role``'s whole process group (its workers too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.processes[role].pid, signum)

    def stop_role(self, role: str, timeout: float = 30.0) -> int | None:
        """SIGTERM ``role``, wait up to ``timeout``, then SIGKILL; returns its exit code."""
        proc = self.processes.pop(role, None)
        if proc is None:
            return None
        return stop_process_group(proc, timeout)

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        """Stop everything in reverse start order; returns each role's exit code. Idempotent."""
        codes = {role: self.stop_role(role, timeout) for role in reversed(list(self.processes))}
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        return codes

    def metrics(self, role: str) -> str:
        """``role``'s ``/metrics`` page (Prometheus text: read it with :mod:`footfall.promtext`)."""
        return promtext.fetch(f"{self.url(role)}/metrics")

    def accepted(self) -> float:
        """Reports the gateway answered 200 for (acknowledged by Kafka)."""
        return promtext.total(self.metrics("gateway"), "footfall_gateway_reports_accepted_total")

    def landed(self) -> float:
        """Records the sink has fsynced into files."""
        return promtext.total(self.metrics("sink"), "footfall_sink_records_written_total")

    def wait_landed(self, timeout: float = 60.0) -> bool:
        """After the load stopped: wait until the sink has landed all the gateway accepted.

        Each worker's counters reach ``/metrics`` through a snapshot written every second, so
        one reading can be a second stale. ``accepted`` is trusted only once two readings 1.2 s
        apart agree (no worker still catching up). Returns False on ``timeout``.
        """
        deadline = time.monotonic() + timeout
        previous = -1.0
        while time.monotonic() < deadline:
            accepted = self.accepted()
            if accepted == previous and self.landed() >= accepted:
                return True
            previous = accepted
            time.sleep(1.2)
        return False

    def bench_command(self, *args: str) -> list[str]:
        """``python -m bench --web-service <gateway> ARGS``."""
        return [sys.executable, "-m", "bench", "--web-service", self.gateway_url, *args]
