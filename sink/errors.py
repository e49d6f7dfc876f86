"""Exceptions of the sink.

Hierarchy::

    FootfallError                (footfall.errors)
    └── SinkError                root of everything the sink raises on purpose
        ├── RecoveryError        the record directory disagrees with its checkpoint; a human must look
        ├── SegmentWriteError    retriable: writing or fsyncing a segment failed (ENOSPC, EIO, EACCES...)
        └── SideTopicError       retriable: a DLQ or retry topic did not acknowledge a record

Configuration problems raise :class:`footfall.errors.ConfigError` (exit code 2).
"""

from __future__ import annotations

from footfall.errors import FootfallError

__all__ = ["RecoveryError", "SegmentWriteError", "SideTopicError", "SinkError"]


class SinkError(FootfallError):
    """Root of every exception the sink raises on purpose."""


class RecoveryError(SinkError):
    """Files and checkpoint disagree in a way the sink must not repair by itself (data would be lost)."""


class SegmentWriteError(SinkError):
    """Writing, fsyncing or truncating a segment file failed; the same operation may work later."""

    retriable = True

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class SideTopicError(SinkError):
    """A dead-letter or retry topic did not acknowledge a record."""

    retriable = True
