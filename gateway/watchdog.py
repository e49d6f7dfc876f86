"""Keep the gateway whole when one of its processes dies: replace a worker, or exit at once.

The gateway is a main process, its HTTP workers, and the process of Sanic's shared-state
manager (a ``multiprocessing`` manager holding every worker's state).

- A dead **worker**: Sanic's worker manager notices (it marks it FAILED) but never starts a new
  one, so a worker killed by the OOM killer or ``kill -9`` would leave the gateway with less
  capacity for good — or, with every worker gone, a main process that holds the port and answers
  nothing. :class:`WorkerWatchdog`, a thread in the main process, asks the manager to restart
  any server worker that is not alive, through the same monitor channel Sanic's own
  ``app.m.restart()`` uses.
- A dead **shared-state manager** cannot be replaced: every process holds a connection to it.
  :func:`exit_when_shared_state_lost` makes the main process stop its workers (SIGTERM: they
  drain; SIGKILL after ``--shutdown-timeout``) and end with :class:`SharedStateLostError` — one
  line, exit 1 — so compose or systemd restart the gateway whole, never a half-dead one.
- **Stop signals** in the main process (:func:`queue_stop_signals`): Sanic's own SIGINT/SIGTERM
  handler stops the workers right inside the handler, and that reads and writes the shared state
  through the connection the interrupted main loop may be in the middle of using (seen on Ctrl+C,
  which signals the whole process group: ``TypeError: 'NoneType' object is not a mapping`` and a
  traceback). Here the first signal only queues the stop for Sanic's main loop; a second one
  kills the workers as Sanic's does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any, Final

from sanic.worker.constants import ProcessState

from footfall.errors import FootfallError
from footfall.signals import ProcessSignals

__all__ = ["SharedStateLostError", "WorkerWatchdog", "exit_when_shared_state_lost", "queue_stop_signals"]

log = logging.getLogger(__name__)

_SETTLED = {ProcessState.RESTARTING, ProcessState.TERMINATED, ProcessState.NONE, ProcessState.IDLE}
#: What a call to a dead multiprocessing manager raises.
_MANAGER_GONE: Final = (BrokenPipeError, ConnectionResetError, ConnectionRefusedError, EOFError)


class SharedStateLostError(FootfallError):
    """Sanic's shared-state manager process died: the workers were stopped and the gateway exits."""


def exit_when_shared_state_lost(manager: Any, grace: float) -> None:
    """Make Sanic's worker manager (``app.manager``, in the main process) end the gateway when its
    shared-state process dies, instead of raising a BrokenPipeError traceback or hanging on.

    Sanic's main loop (``monitor``) reads the workers' state from that process several times a
    second, so the loss shows there first: 1. log; 2. stop every worker (SIGTERM, SIGKILL after
    ``grace`` seconds); 3. raise :class:`SharedStateLostError` out of ``Sanic.serve``.
    """
    monitor = manager.monitor

    def guarded_monitor() -> None:
        try:
            monitor()
        except _MANAGER_GONE as exc:
            log.error(
                "Sanic's shared-state manager process died; stopping the workers and exiting",
                extra={"error": repr(exc)},
            )
            _stop_workers(manager, grace)
            raise SharedStateLostError(
                "the gateway's shared-state manager process died, so its workers were stopped; "
                "run the gateway under a supervisor (compose, systemd) that restarts it"
            ) from exc

    manager.monitor = guarded_monitor


def queue_stop_signals(manager: Any) -> None:
    """Make SIGINT/SIGTERM in the main process only queue the stop while Sanic's manager runs.

    1. the first signal marks the manager as shutting down (the watchdog restarts nothing from
       then on) and sends ``__TERMINATE__`` down the monitor channel: Sanic's main loop stops the
       workers (SIGINT: they drain) at its next turn, never inside the handler;
    2. a second signal kills the workers (``manager.kill``), as Sanic's handler does.
    """
    run = manager.run
    all_workers_ack = manager._all_workers_ack

    def stop() -> None:
        manager._shutting_down = True
        manager.monitor_publisher.send("__TERMINATE__")  # one small write to a pipe: safe in a handler

    def acked_or_stopping() -> bool:
        # Sanic's start-up wait (``wait_for_ack``) re-queues every monitor message but
        # ``__TERMINATE_EARLY__`` and loops on: a stop queued before the workers acknowledged
        # would spin there for ever (seen: Ctrl+C while the workers import). Once a stop is
        # queued the wait ends, and the monitor loop takes the stop at its first turn.
        return bool(manager._shutting_down) or bool(all_workers_ack())

    def run_with_queued_stop() -> None:
        with ProcessSignals(stop=stop, force=manager.kill):
            run()

    manager.run = run_with_queued_stop
    manager._all_workers_ack = acked_or_stopping


def _stop_workers(manager: Any, grace: float) -> None:
    manager._shutting_down = True  # the watchdog must not restart what is stopped here
    processes = [p for p in [*manager.transient_processes, *manager.durable_processes] if p.pid and p.is_alive()]
    for process in processes:
        _signal(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(p.is_alive() for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in processes:
        if process.is_alive():
            log.warning("worker did not stop in time; killing it", extra={"worker_pid": process.pid})
            _signal(process.pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


class WorkerWatchdog:
    """Polls the Sanic worker manager every ``interval`` seconds from a daemon thread.

    It never needs stopping: it restarts nothing once the manager is shutting down, and as a
    daemon thread it ends with the main process.
    """

    def __init__(self, manager: Any, interval: float = 1.0) -> None:
        self.manager = manager
        self.interval = interval
        self._thread = threading.Thread(target=self._run, name="gateway-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            for process in list(self.manager.transient_processes):
                if process.state in _SETTLED or process.is_alive() or self.manager._shutting_down:
                    continue  # a clean stop, or Sanic's own shutdown: nothing to restart
                log.error(
                    "gateway worker died; restarting it", extra={"worker": process.name, "worker_pid": process.pid}
                )
                self.manager.monitor_publisher.send(f"{process.name}:")
