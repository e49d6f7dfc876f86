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

:class:`PartitionLocks` is a group worker's bookkeeping of them: the locks it holds, and the
partitions that wait for a lock (how long, whether past ``--lock-timeout``; each wait that
ends is measured in ``footfall_sink_lock_wait_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from footfall.backoff import Backoff
from footfall.layout import check_topic, folder_of
from sink.checkpoint import STATE_DIR
from sink.consumer import TopicPartition, tp_name
from sink.errors import SegmentWriteError
from sink.instruments import SinkMetrics

__all__ = ["PartitionLock", "PartitionLocks"]

log = logging.getLogger(__name__)

#: Retries of a lock file the disk refuses to open.
_OPEN_BACKOFF: Final = Backoff(0.1, 5.0)


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


@dataclass
class _Wait:
    lock: PartitionLock
    since: float  # time.monotonic() at assignment
    blocked: bool = False  # waited past --lock-timeout (logged, /readyz false)


class PartitionLocks:
    """The partition locks of one group worker: those it holds and those it waits for.

    Args:
        record_directory: where ``_footfall/locks`` is.
        metrics: lock waits, wait seconds, blocked partitions; lock files the disk refuses.
        lock_timeout: ``--lock-timeout``: a longer wait is an error (``/readyz`` false).
        stopping: whether the worker is stopping (a lock file the disk refuses then raises).
    """

    def __init__(
        self, record_directory: Path, metrics: SinkMetrics, *, lock_timeout: float, stopping: Callable[[], bool]
    ) -> None:
        self.root = record_directory
        self.metrics = metrics
        self.lock_timeout = lock_timeout
        self.stopping = stopping
        self.held: dict[TopicPartition, PartitionLock] = {}
        #: Partitions assigned while another process held their lock (paused until it is free).
        self.waiting: dict[TopicPartition, _Wait] = {}

    async def take(self, tp: TopicPartition) -> PartitionLock:
        """Try ``tp``'s lock once; ``lock.held`` says whether it was free.

        Only a lock file the disk refuses is tried again (with backoff; nothing is consumed
        meanwhile), unless the worker is stopping.

        Raises:
            SegmentWriteError: the disk refuses the lock file and the worker is stopping.
        """
        lock = PartitionLock(self.root, tp.topic, tp.partition)
        attempt = 0
        while True:
            try:
                lock.try_acquire()
                return lock
            except SegmentWriteError as exc:
                self.metrics.write_errors.labels(folder_of(tp.topic), exc.errno_name).inc()
                log.warning("cannot open partition lock; retrying", extra={"tp": tp_name(tp), "error": str(exc)})
                if self.stopping():
                    raise
                attempt += 1
                await asyncio.sleep(_OPEN_BACKOFF.delay(attempt))

    def keep(self, tp: TopicPartition, lock: PartitionLock) -> None:
        """``lock`` (held) is ``tp``'s until :meth:`release`."""
        self.held[tp] = lock

    def wait(self, tp: TopicPartition, lock: PartitionLock) -> None:
        """Another process on this machine still writes ``tp`` (a slow revoke, a paused or
        orphaned process): the caller keeps it paused; :meth:`taken_now` tries again."""
        self.waiting[tp] = _Wait(lock, time.monotonic())
        self.metrics.lock_waits.labels(tp.topic).inc()
        self.metrics.lock_waiting.labels(tp.topic).inc()
        log.warning(
            "partition lock held by another process; the partition waits, the others go on",
            extra={"tp": tp_name(tp), "lock": str(lock.path), "holder": lock.holder()},
        )

    def taken_now(self) -> list[tuple[TopicPartition, PartitionLock]]:
        """Take the awaited locks that are free now; their waits end (the caller recovers them).

        A wait longer than ``--lock-timeout`` is logged as an error once and turns ``/readyz``
        false (``footfall_sink_lock_blocked_partitions``); the partition keeps waiting.
        """
        taken: list[tuple[TopicPartition, PartitionLock]] = []
        now = time.monotonic()
        for tp, wait in list(self.waiting.items()):
            try:
                free = wait.lock.try_acquire()
            except SegmentWriteError:
                free = False  # the disk refuses the lock file: try again next loop
            if free:
                self.end_wait(tp)
                taken.append((tp, wait.lock))
                log.info("partition lock taken", extra={"tp": tp_name(tp), "waited_s": round(now - wait.since, 1)})
            elif not wait.blocked and now - wait.since >= self.lock_timeout:
                wait.blocked = True
                self.metrics.lock_blocked.labels(tp.topic, str(tp.partition)).set(1)
                log.error(
                    "partition lock still held; the partition lands nothing until its holder lets go",
                    extra={
                        "tp": tp_name(tp),
                        "lock": str(wait.lock.path),
                        "holder": wait.lock.holder(),
                        "waited_s": round(now - wait.since, 1),
                    },
                )
        return taken

    def end_wait(self, tp: TopicPartition) -> None:
        """``tp`` no longer waits (lock taken, or revoked while waiting): measure the wait."""
        wait = self.waiting.pop(tp, None)
        if wait is not None:
            self.metrics.lock_wait_seconds.labels(tp.topic).observe(time.monotonic() - wait.since)
            self.metrics.lock_waiting.labels(tp.topic).dec()
            if wait.blocked:
                self.metrics.lock_blocked.labels(tp.topic, str(tp.partition)).set(0)

    def release(self, tp: TopicPartition) -> None:
        """Let go of ``tp``: its lock if held, its wait if waiting."""
        lock = self.held.pop(tp, None)
        if lock is not None:
            lock.release()
        self.end_wait(tp)
