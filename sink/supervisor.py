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
       once a worker has lived 30 s). Kafka rebalances its partitions meanwhile. A worker
       that stalled (its fetch task died, or its partitions had lag and it fetched
       nothing for ``--stall-timeout``) exits 4 and is restarted the same way. A worker
       that stops answering (its metrics snapshot, rewritten every second by its event
       loop, older than ``--stall-timeout`` and ``--session-timeout``: a SIGSTOP, a blocked
       loop) is killed and restarted: it cannot stop itself.
    4. A worker that exits 3 (:data:`~sink.errors.EXIT_DO_NOT_RESTART`: a RecoveryError, a
       human must look) is not restarted: the supervisor shuts the sink down (step 1)
       and exits 3, so systemd or compose does not crash-loop it either (give them
       ``RestartPreventExitStatus=3`` or equivalent).

Workers die with the supervisor (:mod:`sink.parent`), so a ``kill -9`` of it leaves no
orphan consuming beside the next instance.
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
from typing import Final

from footfall.backoff import Backoff
from footfall.metrics import Registry
from sink.errors import EXIT_DO_NOT_RESTART, EXIT_STALLED
from sink.instruments import SupervisorMetrics
from sink.process import run_worker
from sink.settings import SinkSettings

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

#: Pause before a dead worker is started again (by its failures in a row).
_RESTART_BACKOFF: Final = Backoff(0.5, 10.0)
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
        #: Set when a worker exited with EXIT_DO_NOT_RESTART (step 4).
        self.fatal: str | None = None

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

    def _kill_unresponsive(self, slot: _Slot) -> None:
        """SIGKILL ``slot``'s worker if its snapshot is older than ``--stall-timeout`` and
        ``--session-timeout`` (by then the group has taken its partitions away anyway).

        Only a worker that has reported at least once is judged (one that is still starting,
        or a stand-in target in tests, writes none).
        """
        proc = slot.process
        if proc is None or proc.pid is None or not proc.is_alive():
            return
        try:
            age = time.time() - (self.metrics_dir / f"{proc.pid}.json").stat().st_mtime
        except OSError:
            return
        if age < max(self.settings.stall_timeout, self.settings.session_timeout):
            return
        log.error(
            "worker unresponsive (no metrics snapshot); killing it for a restart",
            extra={"worker": slot.index, "worker_pid": proc.pid, "silent_s": round(age, 1)},
        )
        self.metrics.unresponsive.inc()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=5)

    def _check_children(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            self._kill_unresponsive(slot)
            proc = slot.process
            if proc is not None and not proc.is_alive():
                code = proc.exitcode if proc.exitcode is not None else -1
                slot.exitcodes.append(code)
                slot.process = None
                lived = now - slot.started
                if code == EXIT_DO_NOT_RESTART:
                    self.fatal = f"worker {slot.index} stopped on an error a human must look at (see its log)"
                    log.critical(
                        "worker stopped on an error restarting cannot fix; stopping the sink",
                        extra={"worker": slot.index, "exitcode": code, "lived_s": round(lived, 1)},
                    )
                    continue
                slot.failures = 1 if lived >= _HEALTHY_AFTER else slot.failures + 1
                delay = _RESTART_BACKOFF.delay(slot.failures)
                slot.restart_at = now + delay
                log.error(
                    "worker stalled; restarting" if code == EXIT_STALLED else "worker died; restarting",
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
                    if self.fatal is None:
                        continue
                    break
                log.info("signal received; shutting down", extra={"signal": signal.Signals(signum).name})
                break
            code = self.shutdown()
            return EXIT_DO_NOT_RESTART if self.fatal is not None else code
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
