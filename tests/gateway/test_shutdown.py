"""A stopping gateway, as a real process: it drains keep-alive connections, and Ctrl+C is quiet.

- SIGTERM under keep-alive load: every request sent gets an answer (``Connection: close`` once
  the gateway is stopping), none is cut by a reset, and the process exits 0 well before
  ``--shutdown-timeout``.
- Ctrl+C in a terminal sends SIGINT to the whole process group (main process, workers and
  Sanic's shared-state process): the gateway stops cleanly, with no traceback, even when the
  signal lands while the main loop waits on the shared state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import JSON_GZIP, GatewayProcess, original_body

pytestmark = pytest.mark.integration


async def _post_until_refused(
    client: httpx.AsyncClient, body: bytes, statuses: list[int], closes: list[int], cut: list[BaseException]
) -> None:
    """Post on one keep-alive connection after another until the gateway refuses new connections.

    A refused connection never carried a request, so it ends the loop; a connection that dies
    under a request sent on it (reset, or closed without an answer) is a cut request.
    """
    while True:
        try:
            response = await client.post("/api/visit/v1", content=body, headers=JSON_GZIP)
        except httpx.ConnectError:
            return
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            cut.append(exc)
            return
        statuses.append(response.status_code)
        if response.headers.get("connection", "").lower() == "close":
            closes.append(response.status_code)


async def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.timeout(60)
async def test_sigterm_under_keep_alive_load_answers_every_request(broker: str, gateway_factory: Any) -> None:
    shutdown_timeout = 8.0
    gw = gateway_factory(["--brokers", broker, "--workers", "2", "--shutdown-timeout", str(shutdown_timeout)])
    body, _ = original_body()
    statuses: list[int] = []
    closes: list[int] = []
    cut: list[BaseException] = []
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=gw.url, limits=limits, timeout=15.0) as client:
        loops = [asyncio.ensure_future(_post_until_refused(client, body, statuses, closes, cut)) for _ in range(16)]
        await _wait_for(lambda: len(statuses) >= 200, 20.0, "200 answers under load")
        stopping_at = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*loops), timeout=shutdown_timeout + 10)
    assert gw.proc.wait(shutdown_timeout + 10) == 0
    stopped_in = time.monotonic() - stopping_at
    assert cut == [], f"{len(cut)} requests cut by the shutdown, e.g. {cut[0]!r}:\n{gw.log.read_text()[-3000:]}"
    assert set(statuses) == {200}
    assert closes, "no answer told its client that the connection closes"
    # Drained, not waited out: busy keep-alive connections closed after their answer.
    assert stopped_in < shutdown_timeout - 2, f"took {stopped_in:.1f} s of the {shutdown_timeout} s shutdown timeout"


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry.name))
    return out


def _in_read(pid: int) -> bool:
    """The process's main thread is blocked in read(2) (syscall 0 on x86-64: a proxy call to the shared state)."""
    return Path(f"/proc/{pid}/syscall").read_text().startswith("0 ")


def _sigint_pending(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return any(
        int(line.split()[1], 16) & (1 << (signal.SIGINT - 1))
        for line in status
        if line.startswith(("SigPnd", "ShdPnd"))
    )


def _poll(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def _gateway_in_own_session(broker: str) -> tuple[GatewayProcess, subprocess.Popen[bytes]]:
    """A two-worker gateway in a session of its own: the process group a terminal's Ctrl+C
    signals, without signalling pytest."""
    gw = GatewayProcess(["--brokers", broker, "--workers", "2"])
    with gw.log.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", *gw.args],
            env=gw.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    gw.proc = proc
    return gw, proc


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="reads the syscall number of x86-64 from /proc")
@pytest.mark.timeout(90)
def test_ctrl_c_to_the_process_group_stops_without_a_traceback(broker: str) -> None:
    """Ctrl+C while Sanic's main loop waits on its shared-state process (made certain here by pausing
    that process): Sanic's own handler would use the same connection from inside the signal handler."""
    gw, proc = _gateway_in_own_session(broker)
    shared_state = None
    try:
        workers = gw.worker_pids(2, 30.0)
        _poll(lambda: httpx.get(gw.url + "/readyz", timeout=2).status_code == 200, 30.0, "/readyz")
        (shared_state,) = [
            pid
            for pid in _children(proc.pid)
            if pid not in workers and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        os.kill(shared_state, signal.SIGSTOP)
        _poll(lambda: _in_read(proc.pid), 10.0, "the main loop to ask the shared state")
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl+C does
        _poll(lambda: not _sigint_pending(proc.pid), 10.0, "SIGINT delivered")
        _poll(lambda: _in_read(proc.pid), 10.0, "the main process to wait again")
        os.kill(shared_state, signal.SIGCONT)
        returncode = proc.wait(30)
    finally:
        if shared_state is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(shared_state, signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    output = gw.log.read_text(errors="replace")
    assert "Traceback" not in output, output[-4000:]
    assert returncode == 0, output[-4000:]
    assert "gateway stopped" in output
    gw.stop()


def _spawned(pid: int) -> list[int]:
    """Children of ``pid`` started by multiprocessing's spawn (Sanic's workers and its shared state)."""
    out = []
    for child in _children(pid):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                out.append(child)
    return sorted(out)


@pytest.mark.timeout(90)
def test_ctrl_c_before_the_workers_are_up_stops_the_gateway(broker: str) -> None:
    """Ctrl+C while Sanic still waits for its workers' start-up acknowledgement (made certain here by
    pausing the workers as soon as they exist): the queued stop must end that wait, not spin in it."""
    gw, proc = _gateway_in_own_session(broker)
    workers: list[int] = []
    try:
        # The shared-state process is spawned first, then the two workers.
        _poll(lambda: len(_spawned(proc.pid)) >= 3, 30.0, "the workers to be spawned")
        workers = _spawned(proc.pid)[1:]
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        assert not list(gw.metrics_dir.glob("*.json"))  # no worker got as far as its first snapshot
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl+C does
        _poll(lambda: not _sigint_pending(proc.pid), 10.0, "SIGINT delivered")
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        returncode = proc.wait(30)  # the old code spun in Sanic's wait_for_ack for ever
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    output = gw.log.read_text(errors="replace")
    assert returncode in (0, 1), output[-4000:]  # stopped by itself, not killed
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "a worker outlived the gateway"
