"""The sink's parent process: starts N worker processes and keeps them running.

Modelled on uvicorn's multiprocess supervisor: ``spawn`` context (no state forked from
the parent), logging set up again in each child, signal handlers that only enqueue,
a loop that restarts dead children with backoff, and shutdown by SIGTERM then join.

Lifecycle:
    1. SIGTERM or SIGINT: forward SIGTERM to every worker; each drains (flush, fsync,
       checkpoint, commit) and exits 0. Wait up to ``--shutdown-timeout``, then SIGKILL
       the rest (their uncommitted records are consumed again: nothing is lost).
    2. A second SIGINT (or SIGTERM) during shutdown forces: SIGKILL now, exit 1.
    3. A worker that dies is restarted after a backoff (0.5 s doubling to 10 s; reset
       once a worker has lived 30 s). Kafka rebalances its partitions meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.process
import os
import queue
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

from footfall.metrics import Registry
from sink.instruments import SupervisorMetrics
from sink.settings import SinkSettings
from sink.worker import run_worker

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

_BACKOFF_START: Final = 0.5
_BACKOFF_MAX: Final = 10.0
_HEALTHY_AFTER: Final = 30.0
_TICK: Final = 0.2

WorkerTarget = Callable[[SinkSettings, int, str | None], None]


@dataclass
class _Slot:
    index: int
    process: multiprocessing.process.BaseProcess | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    exitcodes: list[int] = field(default_factory=list)


class Supervisor:
    """Runs ``settings.concurrent_count`` workers until a signal arrives.

    Tests drive it through :attr:`signals` (put a signal number) instead of real signals.
    """

    def __init__(
        self,
        settings: SinkSettings,
        *,
        target: WorkerTarget = run_worker,
        metrics_dir: Path | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.settings = settings
        self.target = target
        self.signals: queue.Queue[int] = queue.Queue()
        self._own_metrics_dir = metrics_dir is None
        self.metrics_dir = metrics_dir or Path(tempfile.mkdtemp(prefix="footfall-sink-metrics-"))
        self.metrics = SupervisorMetrics(registry)
        self._ctx = multiprocessing.get_context("spawn")
        self.slots = [_Slot(i) for i in range(settings.concurrent_count)]
        self.shutting_down = False

    # ------------------------------------------------------------------ signals

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM only enqueue; the loop decides (safe at any point of the loop)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.put(signum)

    # ------------------------------------------------------------------ children

    def _spawn(self, slot: _Slot) -> None:
        process = self._ctx.Process(
            target=self.target,
            args=(self.settings, slot.index, str(self.metrics_dir)),
            name=f"footfall-sink-worker-{slot.index}",
            daemon=False,
        )
        process.start()
        slot.process = process
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("worker started", extra={"worker": slot.index, "worker_pid": process.pid})

    def alive_pids(self) -> list[int]:
        return [s.process.pid for s in self.slots if s.process is not None and s.process.is_alive() and s.process.pid]

    def _check_children(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            proc = slot.process
            if proc is not None and not proc.is_alive():
                code = proc.exitcode if proc.exitcode is not None else -1
                slot.exitcodes.append(code)
                slot.process = None
                lived = now - slot.started
                slot.failures = 1 if lived >= _HEALTHY_AFTER else slot.failures + 1
                delay = min(_BACKOFF_START * 2 ** (slot.failures - 1), _BACKOFF_MAX)
                slot.restart_at = now + delay
                log.error(
                    "worker died; restarting",
                    extra={"worker": slot.index, "exitcode": code, "lived_s": round(lived, 1), "delay_s": delay},
                )
            if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                self.metrics.restarts.inc()
                self._spawn(slot)
        self.metrics.alive.set(len(self.alive_pids()))

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        """Start the workers, supervise until a signal, shut down. Returns the exit code."""
        try:
            for slot in self.slots:
                self._spawn(slot)
            self.metrics.alive.set(len(self.alive_pids()))
            while True:
                try:
                    signum = self.signals.get(timeout=_TICK)
                except queue.Empty:
                    self._check_children()
                    continue
                log.info("signal received; shutting down", extra={"signal": signal.Signals(signum).name})
                break
            return self.shutdown()
        finally:
            self._kill_all()
            self.cleanup()

    def cleanup(self) -> None:
        """Remove the metrics directory if the supervisor made it."""
        if self._own_metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def shutdown(self) -> int:
        """SIGTERM every worker, wait for them to drain, SIGKILL stragglers (steps 1-2)."""
        self.shutting_down = True
        for slot in self.slots:
            slot.restart_at = None
            if slot.process is not None and not slot.process.is_alive():
                # Died before the shutdown (e.g. kill -9): not a failed drain.
                slot.process.join(timeout=1)
                slot.exitcodes.append(slot.process.exitcode if slot.process.exitcode is not None else -1)
                slot.process = None
            if slot.process is not None and slot.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_timeout
        forced = False
        while any(s.process is not None and s.process.is_alive() for s in self.slots):
            if time.monotonic() >= deadline:
                log.error(
                    "workers did not drain in time; killing them", extra={"timeout_s": self.settings.shutdown_timeout}
                )
                forced = True
                break
            try:
                signum = self.signals.get(timeout=_TICK)
            except queue.Empty:
                continue
            log.warning("second signal: forcing exit", extra={"signal": signal.Signals(signum).name})
            forced = True
            break
        self._kill_all()
        codes = [s.process.exitcode for s in self.slots if s.process is not None]
        # -SIGTERM: the worker got our SIGTERM before it installed its handler, i.e. before
        # it consumed anything: nothing to drain.
        clean = not forced and all(code in (0, -signal.SIGTERM) for code in codes)
        log.info("sink stopped", extra={"exitcodes": codes, "forced": forced})
        return 0 if clean else 1

    def _kill_all(self) -> None:
        for slot in self.slots:
            proc = slot.process
            if proc is not None and proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            if proc is not None:
                proc.join(timeout=5)

    def status(self) -> dict[str, Any]:
        """For /readyz: workers alive out of wanted."""
        return {"workers_alive": len(self.alive_pids()), "workers": len(self.slots)}
