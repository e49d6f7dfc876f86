"""Exceptions of the bench.

Hierarchy::

    FootfallError (footfall.errors)
    └── BenchError               root of everything the bench raises on purpose
        ├── WebServiceError      the web service cannot be reached at start (exit code 1)
        └── RunFileError         a run file (RUN.json) is missing, unreadable or of another format

Transport failures during a run are not exceptions: they are counted by kind
(:mod:`bench.client`) and recorded in the ledger as failed attempts.
"""

from __future__ import annotations

from footfall.errors import FootfallError

__all__ = ["BenchError", "RunFileError", "WebServiceError"]


class BenchError(FootfallError):
    """Root of every exception the bench raises on purpose."""


class WebServiceError(BenchError):
    """The web service is unreachable (refused, unresolvable, timed out) when the run starts."""

    retriable = True


class RunFileError(BenchError):
    """A run file cannot be read: missing, not JSON, or not written by ``bench --json``."""
