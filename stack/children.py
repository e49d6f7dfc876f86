"""The stack's child processes: started to die with us, found by session, described, stopped by group.

Every role, broker and tool the stack starts runs as a session leader of its own
(``start_new_session``: a terminal's Ctrl+C reaches us, not them, and a role and its workers
can be signalled as one group) with ``PR_SET_PDEATHSIG`` (:func:`die_with_parent`), so none
outlives the process that started it, even on ``kill -9``. :func:`spawn` starts them so.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import orjson

from footfall.signals import STOP_SIGNALS

__all__ = ["StartStop", "die_with_parent", "interrupt", "log_cause", "session_of", "spawn", "stop_process_group"]

_PR_SET_PDEATHSIG: Final = 1


def spawn(args: list[str], **popen: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(args, **popen)`` in a session of its own, dying with us, SIGINT/SIGTERM held while it forks.

    With a ``preexec_fn`` Python runs its at-fork callbacks around the fork, logging's lock
    release among them. A signal handler that raises there (Ctrl+C during ``footfall up``'s
    start-up raises KeyboardInterrupt) is ignored, the lock stays taken, and the next log line
    hangs the process (seen in CI). Held, the signal arrives once the fork is done, where the
    exception propagates (the child is already ours: it dies with this process).
    """
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return subprocess.Popen(args, preexec_fn=die_with_parent, start_new_session=True, **popen)  # noqa: S603
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def die_with_parent() -> None:
    """``preexec_fn``: SIGKILL the child when the thread that forked it ends (runs between fork and exec).

    It also takes SIGINT/SIGTERM back: :func:`spawn` holds them while forking, and the mask
    would outlive the exec.
    """
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def session_of(pid: int) -> int | None:
    """The session id of ``pid`` (``/proc/<pid>/stat`` field 6), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGCONT + SIGTERM ``proc`` (a session leader), wait ``timeout``, then SIGKILL its whole group.

    Returns the exit code. Workers left behind by a killed parent die with it (PDEATHSIG);
    the final group kill is a backstop.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def interrupt(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGINT ``proc`` (a bench's graceful stop: finish, write the run file), SIGKILL after ``timeout``.

    Returns the exit code.
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def log_cause(path: Path, size: int = 64 * 1024) -> str:
    """The most telling line at the end of a role's log, for a one-line failure message.

    In this order: the last ``error: ...`` line a role prints for an operator's mistake, the
    last JSON log line at error level (its message and the exception's last line), the last line.
    """
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    for line in reversed(lines):
        if not line.startswith("{"):
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("level") in {"error", "critical"}:
            exception = str(entry.get("exception", "")).strip().splitlines()
            return str(entry.get("message", "")) + (f" ({exception[-1]})" if exception else "")
    return lines[-1][:300] if lines else ""


class StartStop:
    """Base of the stack's process owners: ``with X(...) as x`` is ``x = X(...).start()`` … ``x.stop()``.

    Subclasses define ``start() -> Self`` (raising after cleaning up what it started) and an
    idempotent ``stop()``.
    """

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
