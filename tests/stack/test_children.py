"""stack.children.spawn: a Ctrl+C that lands while a child is being forked still stops us.

With a ``preexec_fn``, Python runs its at-fork callbacks (logging's lock among them) around the
fork. A KeyboardInterrupt raised by the signal handler inside one of them is ignored, and the
logging lock may stay taken: ``footfall up`` hung on Ctrl+C during its start-up in a CI run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stack.children import spawn

_armed = False


def _interrupt_inside_the_fork() -> None:
    # An at-fork callback: stands for Ctrl+C arriving while the child is being forked.
    global _armed
    if _armed:
        _armed = False
        os.kill(os.getpid(), signal.SIGINT)


os.register_at_fork(before=_interrupt_inside_the_fork)


def _child_signal_mask(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16)


def test_a_ctrl_c_during_the_fork_is_raised_after_it() -> None:
    global _armed
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    argv = [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"]
    _armed = True
    with pytest.raises(KeyboardInterrupt):
        spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert not _armed, "the fork ran no at-fork callback"
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before, "our signal mask is back"


def test_the_child_gets_the_stop_signals() -> None:
    argv = [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"]
    child = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        blocked = _child_signal_mask(child.pid)
        assert not blocked & (1 << (signal.SIGINT - 1) | 1 << (signal.SIGTERM - 1)), hex(blocked)
        assert os.getsid(child.pid) == child.pid, "a session of its own"
        child.terminate()
        assert child.wait(10) == -signal.SIGTERM
    finally:
        child.kill()
        child.wait()
