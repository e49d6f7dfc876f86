"""A worker dies with its supervisor: no orphan keeps consuming after a ``kill -9`` of the parent.

An orphaned worker would go on landing its partitions with nobody serving its metrics or
restarting it, and a new sink instance started beside it would share the group with it.
So each worker process:

    1. asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``, Linux), then
       checks the parent is still the one that spawned it (it may have died just before);
    2. watches the parent's end of the ``multiprocessing`` pipe (the sentinel becomes
       readable when the parent is gone): the same news without prctl, e.g. on macOS;
    3. on either, drains as on a supervisor's SIGTERM (flush, fsync, checkpoint, commit,
       leave the group), with ``SIGALRM`` armed for ``--shutdown-timeout`` (plus a second)
       as the hard stop that the missing supervisor would otherwise have sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from typing import Final

__all__ = ["ParentWatch"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG: Final = 1


class ParentWatch:
    """Steps 1-3 of the module docstring for the current (spawned) process."""

    def __init__(self, shutdown_timeout: float) -> None:
        parent = multiprocessing.parent_process()
        self.parent_pid = parent.pid if parent is not None else None
        self._sentinel = parent.sentinel if parent is not None else None
        self.shutdown_timeout = shutdown_timeout
        self._gone = False

    def start(self) -> bool:
        """Step 1. Returns False if the parent is already gone (exit without consuming)."""
        if self.parent_pid is None:
            return True  # not spawned by a supervisor (run in-process by a test): nothing to watch
        if sys.platform == "linux":
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        return not self.orphaned()

    def orphaned(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def watch(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
        """Step 2: call :meth:`parent_gone` when the parent's pipe closes."""
        if self._sentinel is not None:
            loop.add_reader(self._sentinel, self._on_sentinel, loop, stop)

    def _on_sentinel(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
        if self._sentinel is not None:
            loop.remove_reader(self._sentinel)
        self.parent_gone(stop)

    def on_sigterm(self, stop: Callable[[], None]) -> None:
        """SIGTERM handler: the supervisor's drain request, or the parent-death signal of step 1."""
        if self.orphaned():
            self.parent_gone(stop)
        else:
            stop()

    def parent_gone(self, stop: Callable[[], None]) -> None:
        """Step 3 (once)."""
        if self._gone:
            return
        self._gone = True
        log.warning(
            "supervisor gone; draining and exiting",
            extra={"supervisor_pid": self.parent_pid, "deadline_s": self.shutdown_timeout},
        )
        stop()
        # Default action of SIGALRM: the process ends, even if the drain hangs.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(math.ceil(self.shutdown_timeout) + 1)
