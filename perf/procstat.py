"""CPU seconds and resident memory of process groups, read from ``/proc`` (Linux).

Every role of the stack runs in its own session (``start_new_session``), so a role and
all its workers share one process group whose id is the parent's pid. The CPU a group
has used is the sum, over its live members, of ``utime + stime + cutime + cstime`` from
``/proc/<pid>/stat``: a live worker's time is in its own line, a worker that exited and
was reaped by its parent moved its time into the parent's ``cutime``/``cstime``. So the
sum never double counts and never goes backwards while the group leader lives (a
worker reaped by init instead would be lost; the roles reap their own workers).

Peak memory is sampled: :class:`RssSampler` reads the summed RSS of each group every
``interval`` seconds on a thread and keeps the highest. A one-shot process (the bench)
is measured exactly instead, by :func:`wait_rusage` (``wait4``: its own and its reaped
children's CPU time and max RSS).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["CpuTimes", "RssSampler", "group_cpu_seconds", "group_members", "group_rss_bytes", "wait_rusage"]

_PROC: Final = Path("/proc")
_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (field 3 onward), or None if gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split()


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group ``pgid``."""
    members = []
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        # fields[0] is field 3 (state); field 5 (pgrp) is fields[2].
        if fields is not None and len(fields) > 2 and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _cpu_ticks(fields: list[str]) -> int:
    # utime, stime, cutime, cstime are fields 14..17, i.e. fields[11:15].
    return sum(int(v) for v in fields[11:15])


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system, reaped children included) used so far by group ``pgid``."""
    ticks = 0
    for pid in group_members(pgid):
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += _cpu_ticks(fields)
    return ticks / _TICKS


def group_rss_bytes(pgid: int) -> int:
    """Resident set size summed over the live members of group ``pgid`` (shared pages counted per process)."""
    total = 0
    for pid in group_members(pgid):
        try:
            total += int((_PROC / str(pid) / "statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds per named group at one moment; subtract two to get a phase's usage."""

    seconds: Mapping[str, float]

    @classmethod
    def take(cls, groups: Mapping[str, int]) -> CpuTimes:
        """Read every group now (``groups``: name -> process group id)."""
        return cls({name: group_cpu_seconds(pgid) for name, pgid in groups.items()})

    def __sub__(self, earlier: CpuTimes) -> dict[str, float]:
        return {name: max(0.0, value - earlier.seconds.get(name, 0.0)) for name, value in self.seconds.items()}


class RssSampler:
    """Samples the summed RSS of named process groups on a background thread, keeping peaks.

    Use as a context manager around a phase; :meth:`reset` starts a new peak window.
    """

    def __init__(self, groups: Mapping[str, int], interval: float = 0.25) -> None:
        self.groups = dict(groups)
        self.interval = interval
        self._peaks: dict[str, int] = dict.fromkeys(self.groups, 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Take one sample of every group now."""
        for name, pgid in list(self.groups.items()):
            rss = group_rss_bytes(pgid)
            with self._lock:
                self._peaks[name] = max(self._peaks.get(name, 0), rss)

    def reset(self) -> dict[str, int]:
        """Return the peaks so far (bytes) and start a new window."""
        self.sample()
        with self._lock:
            peaks, self._peaks = self._peaks, dict.fromkeys(self.groups, 0)
        return peaks

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> RssSampler:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_rusage(proc: subprocess.Popen[bytes], timeout: float | None = None) -> tuple[int, float, int]:
    """Wait for ``proc`` with ``wait4``: (exit code, CPU seconds, max RSS bytes), children included.

    ``proc.returncode`` is set as :meth:`subprocess.Popen.wait` would.

    Raises:
        subprocess.TimeoutExpired: ``proc`` did not exit within ``timeout`` seconds.
    """
    if timeout is not None:
        # Wait without reaping (WNOWAIT) so that wait4 below still gets the rusage.
        _wait_exited(proc, timeout)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def _wait_exited(proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        if info is not None:
            return
        if time.monotonic() >= deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.05)
