"""Two-stage stop with real signals: the first SIGINT/SIGTERM stops, the second forces.

The signals are sent to this test process while a handler is installed (so they cannot end
the test run), and to a child process where a wrong handler would kill the process: what
happens after the context manager exits is only checked in the child.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import pytest

from footfall.signals import STOP_SIGNALS, LoopSignals, ProcessSignals

ROOT = Path(__file__).resolve().parents[2]


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` (a signal handler runs between two bytecodes of the main thread)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.001)


def test_stop_signals_are_sigint_and_sigterm() -> None:
    assert set(STOP_SIGNALS) == {signal.SIGINT, signal.SIGTERM}


@pytest.mark.parametrize(("first", "second"), [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGTERM)])
def test_process_signals_first_stops_second_forces(first: signal.Signals, second: signal.Signals) -> None:
    calls: list[str] = []
    with ProcessSignals(lambda: calls.append("stop"), lambda: calls.append("force")) as signals:
        assert (signals.count, signals.forced) == (0, False)
        os.kill(os.getpid(), first)
        _until(lambda: len(calls) == 1)
        assert calls == ["stop"]
        assert (signals.count, signals.forced) == (1, False)
        os.kill(os.getpid(), second)
        _until(lambda: len(calls) == 2)
        assert calls == ["stop", "force"]
        assert (signals.count, signals.forced) == (2, True)
        os.kill(os.getpid(), first)  # a third one forces again; it never stops a second time
        _until(lambda: len(calls) == 3)
    assert calls == ["stop", "force", "force"]


def test_process_signals_put_the_previous_handlers_back() -> None:
    def previous(signum: int, frame: FrameType | None) -> None:
        raise AssertionError("not expected while ProcessSignals is active")

    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        signal.signal(signal.SIGTERM, previous)
        with ProcessSignals(lambda: None, lambda: None):
            assert signal.getsignal(signal.SIGTERM) is not previous
            os.kill(os.getpid(), signal.SIGTERM)  # handled by ProcessSignals, not by `previous`
        assert signal.getsignal(signal.SIGTERM) is previous
        assert signal.getsignal(signal.SIGINT) is saved[signal.SIGINT]
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_loop_signals_first_stops_second_forces() -> None:
    async def main() -> tuple[list[str], int, bool]:
        calls: list[str] = []
        stopped, forced = asyncio.Event(), asyncio.Event()

        def stop() -> None:
            calls.append("stop")
            stopped.set()

        def force() -> None:
            calls.append("force")
            forced.set()

        with LoopSignals(stop, force) as signals:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.wait_for(stopped.wait(), 5)
            assert not forced.is_set()
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(forced.wait(), 5)
            return calls, signals.count, signals.forced

    assert asyncio.run(main()) == (["stop", "force"], 2, True)


_CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from footfall.signals import LoopSignals, ProcessSignals

    def previous(signum, frame):
        print("previous", signal.Signals(signum).name, flush=True)

    signal.signal(signal.SIGTERM, previous)
    signal.signal(signal.SIGINT, previous)

    def say(word):
        return lambda: print(word, flush=True)

    if sys.argv[1] == "process":
        with ProcessSignals(say("stop"), say("force")):
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
    else:
        async def main():
            stopped, forced = asyncio.Event(), asyncio.Event()
            def stop():
                print("stop", flush=True)
                stopped.set()
            def force():
                print("force", flush=True)
                forced.set()
            with LoopSignals(stop, force):
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.wait_for(stopped.wait(), 10)
                os.kill(os.getpid(), signal.SIGINT)
                await asyncio.wait_for(forced.wait(), 10)
        asyncio.run(main())
    # After the block, the handlers installed before it answer again.
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)
    print("exit", flush=True)
    """
)


@pytest.mark.parametrize("flavour", ["process", "loop"])
def test_in_a_child_the_handlers_before_come_back_after_the_block(flavour: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, flavour],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == ["stop", "force", "previous SIGTERM", "previous SIGINT", "exit", ""]
