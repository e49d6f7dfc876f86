"""Restart gateway workers that die, as the sink's supervisor does.

Sanic's worker manager notices a dead worker (it marks it FAILED) but never starts a new one,
so a worker killed by the OOM killer or ``kill -9`` leaves the gateway with less capacity for
good — or, with every worker gone, a main process that holds the port and answers nothing.
This thread, in the main process, asks the manager to restart any server worker that is not
alive, through the same monitor channel Sanic's own ``app.m.restart()`` uses.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sanic.worker.constants import ProcessState

__all__ = ["WorkerWatchdog"]

log = logging.getLogger(__name__)

_SETTLED = {ProcessState.RESTARTING, ProcessState.TERMINATED, ProcessState.NONE, ProcessState.IDLE}


class WorkerWatchdog:
    """Polls the Sanic worker manager every ``interval`` seconds from a daemon thread."""

    def __init__(self, manager: Any, interval: float = 1.0) -> None:
        self.manager = manager
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for process in list(self.manager.transient_processes):
                if self._stop.is_set():
                    return
                if process.state in _SETTLED or process.is_alive() or self.manager._shutting_down:
                    continue  # a clean stop, or Sanic's own shutdown: nothing to restart
                log.error(
                    "gateway worker died; restarting it", extra={"worker": process.name, "worker_pid": process.pid}
                )
                self.manager.monitor_publisher.send(f"{process.name}:")
