"""An operator's mistakes, each made for real: one line naming the flag or path, a truthful exit code.

Real ports held by real sockets, real read-only and full file systems (tmpfs mounts, so
root), real dead children. Every command runs as a process, exactly as an operator types it.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from footfall.preflight import listeners
from stack.broker import free_port
from stack.command import EXIT_INTERRUPTED
from stack.processes import RoleStartError, Stack, StackConfig
from stack.up import EXIT_DATA_LOSS, EXIT_FAILED, EXIT_STARTUP

ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only or full file system needs root")


def footfall(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def spawn_footfall(*args: str, stdout: int | None = None) -> subprocess.Popen[str]:
    """``footfall ARGS`` running in its own session, stderr piped (kill its group when done)."""
    return subprocess.Popen(
        [sys.executable, "-m", "stack.cli", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )


def error_lines(stderr: str) -> list[str]:
    """stderr without the first aiokafka line the rate limit lets through (JSON log lines)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def foreign_server() -> Iterator[int]:
    """Port of an HTTP server, not started by footfall, answering 200 to everything (/readyz too)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ready")

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "ro", "size=1m,ro") as path:
        yield path


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "full", "size=256k") as path:
        with contextlib.suppress(OSError), (path / "filler").open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        yield path


# -- the gateway -----------------------------------------------------------------------------


def test_gateway_port_in_use(held_port: int) -> None:
    started = time.monotonic()
    out = footfall("gateway", "--port", str(held_port), "--brokers", "127.0.0.1:1", "--startup-timeout", "5")
    assert out.returncode == 1, out.stderr
    line = error_lines(out.stderr)
    assert len(line) == 1 and line[0].startswith(
        f"error: --port: cannot listen on 127.0.0.1:{held_port}: address already in use (held by pid {os.getpid()}"
    ), out.stderr
    assert line[0].endswith("; pick another port or stop that process")
    assert "Traceback" not in out.stderr
    assert time.monotonic() - started < 5, "the port is checked before waiting for the broker"


def test_traceback_only_at_debug(held_port: int) -> None:
    out = footfall("gateway", "--port", str(held_port), "--brokers", "127.0.0.1:1", "--log-level", "debug")
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "address already in use" in out.stderr.splitlines()[-1]


@needs_root
def test_gateway_metrics_dir_read_only(read_only_dir: Path) -> None:
    out = footfall("gateway", "--port", "0", "--metrics-dir", str(read_only_dir / "m"), "--brokers", "127.0.0.1:1")
    assert out.returncode == 1
    assert error_lines(out.stderr) == [
        f"error: --metrics-dir: cannot write to '{read_only_dir / 'm'}': it is on a read-only file system; "
        "pick a writable directory"
    ], out.stderr


def test_gateway_unknown_broker_is_one_line_not_a_flood() -> None:
    dead = free_port()
    out = footfall("gateway", "--port", "0", "--brokers", f"127.0.0.1:{dead}", "--startup-timeout", "4")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: --brokers: Kafka at 127.0.0.1:{dead} did not answer within 4s"), out.stderr
    # aiokafka logs each failed connect (~20 in 4 s); one per interval passes
    assert len(lines) <= 3, out.stderr


# -- the sink --------------------------------------------------------------------------------


def test_sink_metrics_port_in_use(held_port: int, tmp_path: Path) -> None:
    started = time.monotonic()
    out = footfall(
        "sink", "--metrics-port", str(held_port), "--brokers", "127.0.0.1:1", "--groups", "g:visit",
        "--record-directory", str(tmp_path / "records"),
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    line = error_lines(out.stderr)
    assert len(line) == 1 and line[0].startswith(
        f"error: --metrics-port: cannot listen on 127.0.0.1:{held_port}: address already in use (held by pid "
        f"{os.getpid()}"
    ), out.stderr
    assert time.monotonic() - started < 5, "the port is checked before waiting for the broker"


# -- the dashboard ---------------------------------------------------------------------------


def test_dashboard_port_in_use(held_port: int, tmp_path: Path) -> None:
    out = footfall("dashboard", "--record-directory", str(tmp_path), "--port", str(held_port))
    assert out.returncode == 1
    lines = error_lines(out.stderr)
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: --port: cannot listen on 127.0.0.1:{held_port}: address already in use")
    assert "Traceback" not in out.stderr


@needs_root
def test_dashboard_read_only_record_directory(read_only_dir: Path) -> None:
    out = footfall("dashboard", "--record-directory", str(read_only_dir), "--port", str(free_port()))
    assert out.returncode == 1
    assert error_lines(out.stderr) == [
        f"error: --record-directory: cannot write to '{read_only_dir / '_footfall'}': it is on a read-only file "
        "system; the dashboard keeps its rollups there: give it a writable --state-dir"
    ], out.stderr


@needs_root
def test_dashboard_full_state_dir(full_dir: Path, tmp_path: Path) -> None:
    out = footfall(
        "dashboard", "--record-directory", str(tmp_path), "--state-dir", str(full_dir), "--port", str(free_port())
    )
    assert out.returncode == 1
    assert error_lines(out.stderr) == [
        f"error: --state-dir: cannot write to '{full_dir}': no space left on the device; "
        "free some space or pick another directory"
    ], out.stderr


# -- flag values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["gateway", "--port", "abc"], "error: --port (env FOOTFALL_GATEWAY_PORT): expected a whole number, got 'abc'"),
        (
            ["dashboard", "--record-directory", "x", "--auth", "nocolon"],
            "error: --auth (env FOOTFALL_DASHBOARD_AUTH): expected USER:PASSWORD (value not shown: it is a secret)",
        ),
        (
            ["up", "--profile", "weird"],
            "error: --profile: invalid choice 'weird' (choose from 'original', 'realistic'); see footfall up --help",
        ),
        (
            ["sink", "--record-directory", "x", "--groups", "g:visit", "--concurrent-count", "0"],
            "error: --concurrent-count (env FOOTFALL_SINK_CONCURRENT_COUNT): expected a whole number >= 1, got '0'",
        ),
        (["broker", "--bogus"], "error: unrecognized arguments: --bogus; see footfall broker --help"),
    ],
)
def test_flag_errors_are_one_line_in_words(argv: list[str], line: str) -> None:
    out = footfall(*argv)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [line]


# -- footfall broker -------------------------------------------------------------------------


@pytest.mark.integration
def test_broker_port_in_use(held_port: int) -> None:
    out = footfall("broker", "--port", str(held_port), timeout=30)
    assert out.returncode == 1
    lines = error_lines(out.stderr)
    assert len(lines) == 1 and lines[0].startswith(
        f"error: --port: cannot listen on 127.0.0.1:{held_port}: address already in use"
    ), out.stderr
    assert "embedded broker on" not in out.stderr


@pytest.mark.integration
def test_broker_that_dies_ends_the_command() -> None:
    port = free_port()
    proc = spawn_footfall("broker", "--port", str(port))
    try:
        assert proc.stderr is not None
        lines = iter(proc.stderr.readline, "")
        assert any(line.startswith(f"embedded broker on 127.0.0.1:{port} (pid ") for line in lines)
        (tansu,) = listeners(port)
        os.kill(tansu, signal.SIGKILL)
        code = proc.wait(timeout=10)
        rest = proc.stderr.read()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert code == 1
    assert error_lines(rest)[-1].startswith(f"error: the embedded broker (pid {tansu}) exited with code -9; log: ")


# -- footfall up -----------------------------------------------------------------------------


def up(record_directory: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    ports = ["--gateway-port", "0", "--sink-port", "0", "--dashboard-port", "0"]
    return footfall("up", "--record-directory", str(record_directory), *ports, *args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.integration
def test_role_that_never_becomes_ready(tmp_path: Path) -> None:
    """A gateway waiting for a broker that does not exist: the start gives up after its timeout, in one line."""
    logs = tmp_path / "logs"
    stack = Stack(
        StackConfig(
            record_directory=tmp_path / "records",
            brokers=f"127.0.0.1:{free_port()}",
            dashboard=False,
            log_directory=logs,
        )
    )
    with pytest.raises(RoleStartError) as info:
        stack.start(timeout=3)
    message = str(info.value)
    assert message.startswith(f"gateway: not ready on 127.0.0.1:{stack.ports['gateway']} within 3s")
    assert message.endswith(f"; log: {logs / 'gateway.log'}") and "\n" not in message
    assert info.value.role == "gateway" and not stack.processes, "the failed start stopped what it started"


@needs_root
def test_up_read_only_record_directory(read_only_dir: Path) -> None:
    out = up(read_only_dir / "records")
    assert out.returncode == EXIT_STARTUP
    assert error_lines(out.stderr) == [
        f"footfall up: --record-directory: cannot write to '{read_only_dir / 'records'}': it is on a read-only "
        "file system; pick a writable directory"
    ], out.stderr


@pytest.mark.integration
def test_up_never_uses_a_server_it_did_not_start(foreign_server: int, tmp_path: Path) -> None:
    out = up(tmp_path, "--gateway-port", str(foreign_server), "--duration", "3")
    assert out.returncode == EXIT_STARTUP
    lines = error_lines(out.stderr)
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(
        f"footfall up: gateway: --gateway-port: cannot listen on 127.0.0.1:{foreign_server}: address already in use"
    )
    assert "gateway    http" not in out.stdout


@pytest.mark.integration
def test_up_role_that_exits_at_start_up(tmp_path: Path) -> None:
    out = up(tmp_path, "--duration", "3", env={"FOOTFALL_GATEWAY_MAX_ERRORS": "0"})
    assert out.returncode == EXIT_STARTUP
    log = tmp_path / "_footfall" / "logs" / "gateway.log"
    assert error_lines(out.stderr) == [
        "footfall up: gateway: exited with code 2 at start-up: --max-errors (env FOOTFALL_GATEWAY_MAX_ERRORS): "
        f"expected a whole number >= 1, got '0'; log: {log}"
    ], out.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_up_fails_at_once_when_a_role_dies(tmp_path: Path) -> None:
    ports = ["--gateway-port", "0", "--sink-port", "0", "--dashboard-port", "0"]
    load = ["--duration", "90", "--concurrent-clients", "4"]
    proc = spawn_footfall("up", "--record-directory", str(tmp_path), *ports, *load, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        sink_port = None
        for line in proc.stdout:
            if line.startswith("  sink "):
                sink_port = int(line.split(":")[-1].split("/")[0])
            if line.startswith("Ctrl+C"):
                break
        assert sink_port is not None
        (supervisor,) = listeners(sink_port)
        os.killpg(supervisor, signal.SIGKILL)  # the sink and its workers: a real dead child
        killed = time.monotonic()
        code = proc.wait(timeout=60)
        took = time.monotonic() - killed
        out, err = proc.stdout.read(), proc.stderr.read() if proc.stderr else ""
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert code in {EXIT_DATA_LOSS, EXIT_FAILED}, (code, out, err)
    log = tmp_path / "_footfall" / "logs" / "sink.log"
    assert f"footfall up: sink exited with code -9 while running; log: {log}" in error_lines(err), err
    assert took < 30, "up noticed the dead sink at once, not at the end of --duration"
    assert "\r" not in out, "no carriage returns when stdout is not a terminal"
    if code == EXIT_DATA_LOSS:  # what the sink had not landed died with the memory-only broker: say so
        assert any(line.startswith("footfall up: reports the sink had not landed") for line in error_lines(err)), err


@pytest.mark.integration
def test_ctrl_c_during_up_start_up_stops_what_started_and_exits_130(tmp_path: Path) -> None:
    """Ctrl+C while the roles are still starting: nothing is left running, one line, exit 130."""
    ports = ["--gateway-port", "0", "--sink-port", "0", "--dashboard-port", "0"]
    proc = spawn_footfall("up", "--record-directory", str(tmp_path), *ports, stdout=subprocess.PIPE)
    gateway_log = tmp_path / "_footfall" / "logs" / "gateway.log"
    try:
        deadline = time.monotonic() + 30
        while not gateway_log.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # polling for the gateway's start (its log appears when it is spawned)
        assert gateway_log.exists(), "the gateway never started"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == EXIT_INTERRUPTED, (proc.returncode, out, err)
    assert error_lines(err) == ["footfall up: interrupted during start-up; stopped what had started"], err
    assert not (gateway_log.parent / "dashboard.log").exists(), "the start-up went on after Ctrl+C"
    assert "Ctrl+C stops everything" not in out, out
    assert "Traceback" not in err
    left = [pid for pid in _pids_mentioning(str(tmp_path)) if pid != proc.pid]
    assert left == [], f"processes left behind: {left}"


def _pids_mentioning(marker: str) -> list[int]:
    """Live processes whose command line mentions ``marker`` (e.g. this test's record directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
    return found
