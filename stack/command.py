"""What the ``footfall`` commands in stack/ share: flags in, one exit code out; run until Ctrl+C.

:func:`command` makes a ``main(argv) -> int`` from a settings Struct and a ``run(settings)``:
flags and env parsed by :func:`footfall.settings.parse_settings`, a :class:`FootfallError`
turned into one line (:func:`footfall.settings.run_main`). :func:`run_in_foreground` is the
loop of ``footfall broker`` and ``footfall kafka``: wait for Ctrl+C/SIGTERM, end at once
(exit 1, one line) when what it runs dies. :class:`Interrupts` is Ctrl+C for ``footfall up``
and ``footfall rehearse``, which start many processes before they run.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from typing import Final, Self, TypeVar

import msgspec

from footfall.settings import parse_settings, run_main
from footfall.signals import ProcessSignals

__all__ = ["EXIT_INTERRUPTED", "Interrupts", "command", "run_in_foreground"]

S = TypeVar("S", bound=msgspec.Struct)

#: A command stopped by Ctrl+C before it could finish its work (128 + SIGINT, as shells do).
EXIT_INTERRUPTED: Final = 130
_POLL_S: Final = 0.5  # how soon a death ends the command


def command(
    cls: type[S], run: Callable[[S], int], *, prog: str, description: str, env_prefix: str
) -> Callable[[Sequence[str] | None], int]:
    """``main(argv)`` of the command ``prog``: parse ``cls`` from ``argv`` and env, return ``run(settings)``."""

    def main(argv: Sequence[str] | None = None) -> int:
        return run_main(
            lambda: run(parse_settings(cls, argv, prog=prog, description=description, env_prefix=env_prefix))
        )

    main.__doc__ = f"``{prog}`` entry point: returns its exit code."
    return main


def run_in_foreground(death: Callable[[], str | None]) -> int:
    """Wait until Ctrl+C or SIGTERM (exit 0), or until ``death()`` describes one (printed as ``error: …``, exit 1)."""
    stop = threading.Event()
    with ProcessSignals(stop.set, stop.set):
        while not stop.wait(_POLL_S):
            what = death()
            if what is not None:
                print(f"error: {what}", file=sys.stderr)
                return 1
    return 0


class Interrupts:
    """Ctrl+C/SIGTERM for a command that starts processes, then runs until asked to stop.

    While starting (until :meth:`started`), the first signal abandons the start-up: it raises
    ``KeyboardInterrupt`` in the main thread, and the start stops what it had started on the way
    out. Once running, the first signal sets :attr:`stop` (drain and finish), a second one
    raises ``KeyboardInterrupt`` (stop waiting politely). A context manager.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.starting = True
        self._signals = ProcessSignals(self._first, self._second)

    def started(self) -> None:
        """Start-up is over: from now on the first signal asks to stop."""
        self.starting = False

    def _first(self) -> None:
        if self.starting:
            raise KeyboardInterrupt
        self.stop.set()

    def _second(self) -> None:
        raise KeyboardInterrupt

    def __enter__(self) -> Self:
        self._signals.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._signals.__exit__(*exc)
