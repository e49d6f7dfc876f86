"""Per-partition file locks: one writer per partition on a machine, whatever the group says.

Kafka's group assignment decides which process writes which partition, but a rebalance
can outrun a slow revoke (or a process that is paused with SIGSTOP, or an orphan whose
supervisor died). An exclusive ``flock`` on ``_footfall/locks/<topic>/<partition>.lock``
fences them: a partition is written only by the process holding its lock, and the kernel
releases the lock when the holder closes it or dies.

Taking a lock never blocks: :meth:`PartitionLock.try_acquire` returns False while another
process holds it, and the worker keeps that partition paused and tries again later while
its other partitions go on landing. The holder writes its pid and host into the lock file,
so a partition that waits can say who it waits for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from footfall.layout import check_topic
from sink.checkpoint import STATE_DIR
from sink.errors import SegmentWriteError

__all__ = ["PartitionLock"]


class PartitionLock:
    """An exclusive ``flock`` on ``_footfall/locks/<topic>/<partition>.lock`` (released on close or death)."""

    def __init__(self, record_directory: Path, topic: str, partition: int) -> None:
        self.path = record_directory / STATE_DIR / "locks" / check_topic(topic) / f"{partition}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if free; False at once if another process holds it.

        Raises:
            SegmentWriteError: the lock file cannot be opened (retriable: the disk refuses).
        """
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            try:  # a read-only record directory: an existing lock file still locks
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                raise SegmentWriteError(f"cannot open lock file {self.path}: {exc.strerror}", exc.errno) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        # Who holds it, for the operator and for a waiting process's log line. Best effort:
        # the lock is the flock, not this text (a read-only directory cannot take it).
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid={os.getpid()} host={socket.gethostname()}\n".encode(), 0)
        return True

    def holder(self) -> str:
        """What the lock file says about its holder (``pid=... host=...``), or ``unknown``."""
        try:
            text = self.path.read_text(errors="replace").strip()
        except OSError:
            return "unknown"
        return text or "unknown"

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock
