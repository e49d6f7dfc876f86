"""What the supervisor does with a worker's exit code, and what /readyz says (lag, locks).

Driven through the signal queue with stand-in worker targets, as tests/sink/test_supervisor.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from footfall.metrics import SnapshotWriter
from sink.errors import EXIT_DO_NOT_RESTART, EXIT_STALLED, RecoveryError
from sink.instruments import SinkMetrics
from sink.metrics_server import workers_ready
from sink.settings import SinkSettings
from sink.supervisor import Supervisor
from tests.sink.support import run_supervisor, supervisor_settings, wait_for
from tests.sink.test_supervisor import _sleeper


def _recovery_error_in_one(settings: SinkSettings, index: int, metrics_dir: str | None) -> None:
    if index == 0:
        sys.exit(EXIT_DO_NOT_RESTART)  # what run_worker exits with on a RecoveryError
    _sleeper(settings, index, metrics_dir)


class _WorkerWhoseRecoveryFails:
    """Stands in for sink.process.Worker: its run raises what a partition's recovery may raise."""

    def __init__(self, settings: SinkSettings, metrics_dir: Path | None = None, index: int = 0) -> None:
        self.metrics_dir = metrics_dir

    def stop(self) -> None: ...

    async def run(self) -> None:
        raise RecoveryError("visit[0]: segment visit/date=2018-01-01/visit+0+00000000000000000007.jsonl already exists")


def _real_entry_recovery_fails(settings: SinkSettings, index: int, metrics_dir: str | None) -> None:
    """Worker 0: the real worker entry point (signals, parent watch, exit codes), in the spawned
    child only with a Worker whose run fails recovery. Worker 1 runs on."""
    if index != 0:
        _sleeper(settings, index, metrics_dir)
        return
    import sink.process

    sink.process.Worker = _WorkerWhoseRecoveryFails  # type: ignore[misc,assignment]
    sink.process.run_worker(settings, index, metrics_dir)


def _stalls_once(settings: SinkSettings, index: int, metrics_dir: str | None) -> None:
    marker = Path(settings.record_directory) / f"stalled-{index}"
    if not marker.exists():
        marker.write_text("x")
        sys.exit(EXIT_STALLED)
    _sleeper(settings, index, metrics_dir)


@pytest.mark.parametrize(
    "target",
    [_recovery_error_in_one, _real_entry_recovery_fails],
    ids=["exit-3", "recovery-error-through-run_worker"],
)
def test_a_worker_that_needs_a_human_stops_the_sink_instead_of_crash_looping(
    tmp_path: Path, target: Callable[[SinkSettings, int, str | None], None]
) -> None:
    """Also through the real worker entry: run_worker turns a RecoveryError into exit 3, not a traceback's 1."""
    sup = Supervisor(supervisor_settings(tmp_path, concurrent_count=2), target=target, metrics_dir=tmp_path)
    thread, result = run_supervisor(sup)
    thread.join(30)
    assert not thread.is_alive(), "the supervisor kept running (restarting a worker that cannot recover)"
    assert result == [EXIT_DO_NOT_RESTART]
    assert sup.metrics.restarts.labels().value == 0
    assert sup.slots[0].exitcodes == [EXIT_DO_NOT_RESTART]
    assert sup.alive_pids() == []
    assert sup.fatal is not None
    assert workers_ready(tmp_path, [], 2, sup.fatal) == (False, f"stopping: {sup.fatal}")


def test_a_stalled_worker_is_restarted(tmp_path: Path) -> None:
    sup = Supervisor(supervisor_settings(tmp_path, concurrent_count=1), target=_stalls_once, metrics_dir=tmp_path)
    thread, result = run_supervisor(sup)
    wait_for(lambda: sup.metrics.restarts.labels().value == 1 and len(sup.alive_pids()) == 1, 20, "a restart")
    assert sup.slots[0].exitcodes == [EXIT_STALLED]
    sup.signals.put(15)
    thread.join(20)
    assert result == [0]


def _snapshot(directory: Path, metrics: SinkMetrics) -> int:
    SnapshotWriter(metrics.registry, directory).write()
    return os.getpid()


def test_readyz_gives_the_lag_and_names_partitions_blocked_on_their_lock(tmp_path: Path) -> None:
    metrics = SinkMetrics()
    metrics.ready.set(1)
    metrics.lag.labels("visit", "0").set(0)
    metrics.lag.labels("visit", "3").set(120)
    metrics.lag.labels("activity", "1").set(5)
    pid = _snapshot(tmp_path, metrics)
    assert workers_ready(tmp_path, [pid], 1) == (True, "ready\nlag 125 records (visit[3] 120, activity[1] 5)")
    assert workers_ready(tmp_path, [pid], 2)[0] is False

    metrics.lock_blocked.labels("visit", "2").set(1)
    _snapshot(tmp_path, metrics)
    ready, reason = workers_ready(tmp_path, [pid], 1)
    assert not ready
    assert reason.startswith("visit[2]: waiting for the partition lock longer than --lock-timeout")
    assert reason.endswith("lag 125 records (visit[3] 120, activity[1] 5)")

    metrics.lock_blocked.labels("visit", "2").set(0)
    _snapshot(tmp_path, metrics)
    assert workers_ready(tmp_path, [pid], 1)[0] is True
