"""Two-stage stop: the first SIGINT/SIGTERM asks for a graceful stop, the second forces it.

Every long-running command behaves the same on Ctrl+C: the first one drains (answers what is in
flight, lands what was read, flushes files), a second one stops at once. The handlers only
call the two callbacks; what "stop" and "force" mean stays with the caller.

Two flavours, because the callers live in two worlds:

- :class:`LoopSignals` for code inside an asyncio event loop (``loop.add_signal_handler``);
- :class:`ProcessSignals` for a plain process (``signal.signal``), e.g. a supervisor whose main
  thread waits on children.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, Final

__all__ = ["STOP_SIGNALS", "LoopSignals", "ProcessSignals"]

#: The signals that ask a Footfall process to stop.
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class _TwoStage:
    def __init__(self, stop: Callable[[], None], force: Callable[[], None]) -> None:
        self.count = 0  #: signals received so far
        self._stop, self._force = stop, force

    @property
    def forced(self) -> bool:
        """True once a second signal has arrived."""
        return self.count > 1

    def _on_signal(self) -> None:
        self.count += 1
        (self._stop if self.count == 1 else self._force)()


class LoopSignals(_TwoStage):
    """Context manager: first signal -> ``stop()``, second -> ``force()``, in the running loop.

    The previous handlers come back on exit (``remove_signal_handler`` alone would leave
    Python's defaults, dropping whatever the process had installed before).
    """

    def __enter__(self) -> LoopSignals:
        self._loop = asyncio.get_running_loop()
        self._previous: dict[signal.Signals, Any] = {}
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            self._loop.add_signal_handler(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            self._loop.remove_signal_handler(sig)
            if previous is not None:  # None: a handler not installed from Python, nothing to put back
                signal.signal(sig, previous)


class ProcessSignals(_TwoStage):
    """Context manager: first signal -> ``stop()``, second -> ``force()``, via ``signal.signal``.

    The callbacks run in the main thread between bytecodes, so they must be short and
    thread-safe (set an event, put on a queue) or raise (e.g. ``KeyboardInterrupt`` to
    abandon a blocking wait). The previous handlers come back on exit.
    """

    def __enter__(self) -> ProcessSignals:
        self._previous: dict[signal.Signals, Any] = {}
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self._on_signal()
