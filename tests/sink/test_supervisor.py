"""The supervisor driven through its signal queue (as uvicorn tests its multiprocess supervisor)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from sink.settings import SinkSettings
from sink.supervisor import Supervisor
from tests.sink.support import run_supervisor, supervisor_settings, wait_for


def _sleeper(settings: SinkSettings, index: int, metrics_dir: str | None) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait(60)
    sys.exit(0)


def _crash_first(settings: SinkSettings, index: int, metrics_dir: str | None) -> None:
    marker = Path(settings.record_directory) / f"started-{index}"
    if not marker.exists():
        marker.write_text("x")
        sys.exit(1)
    _sleeper(settings, index, metrics_dir)


def _stubborn(settings: SinkSettings, index: int, metrics_dir: str | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    (Path(settings.record_directory) / f"stubborn-{os.getpid()}").touch()  # the handler is in place
    time.sleep(60)


def _stubborn_ready(tmp_path: Path) -> bool:
    return any(tmp_path.glob("stubborn-*"))


def _start_stubborn(tmp_path: Path, shutdown_timeout: float) -> tuple[Supervisor, threading.Thread, list[int]]:
    """A supervisor whose one worker ignores SIGTERM, running, the worker's handler in place."""
    sup = Supervisor(
        supervisor_settings(tmp_path, concurrent_count=1, shutdown_timeout=shutdown_timeout),
        target=_stubborn,
        metrics_dir=tmp_path,
    )
    thread, result = run_supervisor(sup)
    wait_for(lambda: _stubborn_ready(tmp_path), 20, "a worker ignoring SIGTERM")
    return sup, thread, result


def test_starts_workers_and_drains_on_sigterm(tmp_path: Path) -> None:
    sup = Supervisor(supervisor_settings(tmp_path, concurrent_count=2), target=_sleeper, metrics_dir=tmp_path)
    thread, result = run_supervisor(sup)
    wait_for(lambda: len(sup.alive_pids()) == 2, 20, "two workers")
    sup.signals.put(signal.SIGTERM)
    thread.join(20)
    assert result == [0]
    assert sup.alive_pids() == []


def test_restarts_a_dead_worker_with_backoff(tmp_path: Path) -> None:
    sup = Supervisor(supervisor_settings(tmp_path, concurrent_count=1), target=_crash_first, metrics_dir=tmp_path)
    thread, result = run_supervisor(sup)
    wait_for(lambda: sup.metrics.restarts.labels().value == 1 and len(sup.alive_pids()) == 1, 20, "a restart")
    assert sup.slots[0].exitcodes == [1]
    sup.signals.put(signal.SIGINT)
    thread.join(20)
    assert result == [0]


def test_second_signal_forces(tmp_path: Path) -> None:
    sup, thread, result = _start_stubborn(tmp_path, shutdown_timeout=60.0)
    sup.signals.put(signal.SIGTERM)
    started = time.monotonic()
    sup.signals.put(signal.SIGINT)
    thread.join(20)
    assert result == [1]
    assert time.monotonic() - started < 10
    assert sup.alive_pids() == []


def test_shutdown_timeout_kills_stragglers(tmp_path: Path) -> None:
    sup, thread, result = _start_stubborn(tmp_path, shutdown_timeout=1.0)
    sup.signals.put(signal.SIGTERM)
    thread.join(20)
    assert result == [1]
    assert sup.alive_pids() == []
