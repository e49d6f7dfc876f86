"""Exceptions of the sink.

Hierarchy::

    FootfallError                (footfall.errors)
    └── SinkError                root of everything the sink raises on purpose
        ├── RecoveryError        the record directory disagrees with its checkpoint; a human must look
        │   └── CheckpointError  one partition's checkpoint is invalid: that partition waits for a human
        ├── WorkerStalledError   a worker's fetcher died, or it holds partitions with lag and fetches nothing
        ├── SessionTimeoutRefusedError  the brokers refuse --session-timeout: a human must change it
        ├── SegmentWriteError    retriable: writing or fsyncing a segment failed (ENOSPC, EIO, EACCES...)
        │   └── SegmentLostError the open segment was deleted or replaced under the sink
        └── SideTopicError       retriable: a DLQ or retry topic did not acknowledge a record

Configuration problems raise :class:`footfall.errors.ConfigError` (exit code 2).

A worker process that stops on one of these exits with the class's ``exit_code``; the
supervisor restarts every code but :data:`EXIT_DO_NOT_RESTART`, which stops the whole sink.
"""

from __future__ import annotations

import errno as errno_mod
from pathlib import Path

from footfall.errors import FootfallError

__all__ = [
    "EXIT_DO_NOT_RESTART",
    "EXIT_STALLED",
    "CheckpointError",
    "RecoveryError",
    "SegmentLostError",
    "SegmentWriteError",
    "SessionTimeoutRefusedError",
    "SideTopicError",
    "SinkError",
    "WorkerStalledError",
]


#: Exit code of a worker (and of the sink) after an error a human must look at.
EXIT_DO_NOT_RESTART = 3
#: Exit code of a worker that stopped because it stalled; restarted at once.
EXIT_STALLED = 4


class SinkError(FootfallError):
    """Root of every exception the sink raises on purpose."""

    #: Exit code of a worker process that stops on this error (the supervisor restarts it).
    exit_code = 1


class RecoveryError(SinkError):
    """Files and checkpoint disagree in a way the sink must not repair by itself (data would be lost)."""

    #: Restarting cannot help: the supervisor stops the sink (exit 3) instead of crash-looping.
    exit_code = EXIT_DO_NOT_RESTART


class CheckpointError(RecoveryError):
    """A partition's checkpoint is unreadable, or contradicts itself or its segment file.

    The worker keeps that partition paused (and retries it now and then) while the others
    go on; nothing is truncated, deleted or consumed again on its account.
    """

    def __init__(self, path: Path, partition: str, reason: str) -> None:
        super().__init__(
            f"{partition}: checkpoint {path} {reason}; the partition is paused until the file is "
            "fixed or restored (see docs/operations.md, failure table)"
        )
        self.path = path
        self.partition = partition
        self.reason = reason


class SessionTimeoutRefusedError(SinkError):
    """The group coordinator refuses ``--session-timeout`` (outside the brokers'
    ``group.min/max.session.timeout.ms``): every restart would be refused the same way."""

    exit_code = EXIT_DO_NOT_RESTART


class WorkerStalledError(SinkError):
    """The worker cannot make progress by itself (dead fetch task, or no record fetched for
    ``--stall-timeout`` while its partitions have lag): a fresh process can."""

    exit_code = EXIT_STALLED


class SegmentWriteError(SinkError):
    """Writing, fsyncing or truncating a segment file failed; the same operation may work later."""

    retriable = True

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    @property
    def errno_name(self) -> str:
        """``ENOSPC``, ``EIO``...: the ``errno`` label of ``footfall_sink_write_errors_total``."""
        return errno_mod.errorcode.get(self.errno or 0, "unknown")


class SegmentLostError(SegmentWriteError):
    """The open segment file was deleted, replaced or changed by someone else.

    Handled like a failed write: the partition goes back to its checkpoint (which no longer
    points into the lost file) and consumes again into a new segment. ``landed_lines``
    records up to the checkpoint were in the lost file: they are gone with it.
    """

    def __init__(self, message: str, *, segment: str, landed_lines: int) -> None:
        super().__init__(message, None)
        self.segment = segment
        self.landed_lines = landed_lines


class SideTopicError(SinkError):
    """A dead-letter or retry topic did not acknowledge a record."""

    retriable = True
