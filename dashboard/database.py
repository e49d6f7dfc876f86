"""The DuckDB side of the store: opening the database file and running one transaction.

DuckDB errors met while opening are translated here, once: a file another process holds
becomes :class:`~dashboard.errors.DatabaseLockedError` (with that process's pid when DuckDB
names it), anything else :class:`~dashboard.errors.StoreError`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import duckdb

from dashboard.errors import DatabaseLockedError, StoreError

__all__ = ["connect", "transaction"]

# DuckDB raises a plain IOException for a lock conflict; its message is the only place that
# says so (and names the holder): 'Could not set lock on file "...": Conflicting lock is held
# in /usr/bin/python3 (PID 1234) ...'.
_LOCKED: Final = re.compile(r"Could not set lock on file .*Conflicting lock is held(?:.*?\(PID (\d+)\))?", re.DOTALL)


def connect(database: Path | None, *, threads: int, memory_limit: str) -> duckdb.DuckDBPyConnection:
    """Open (or create) ``database``; ``None`` is an in-memory database.

    Raises:
        DatabaseLockedError: another process has the file open.
        StoreError: any other reason the file cannot be opened.
    """
    config: dict[str, str | bool | int | float | list[str]] = {"threads": str(threads), "memory_limit": memory_limit}
    try:
        return duckdb.connect(str(database) if database else ":memory:", config=config)
    except duckdb.IOException as exc:
        locked = _LOCKED.search(str(exc))
        if database is not None and locked is not None:
            pid = int(locked[1]) if locked[1] else None
            raise DatabaseLockedError(database, pid) from exc
        raise StoreError(f"cannot open the dashboard database {database}: {exc}") from exc
    except duckdb.Error as exc:
        raise StoreError(f"cannot open the dashboard database {database}: {exc}") from exc


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """``BEGIN`` … ``COMMIT``; ``ROLLBACK`` instead if the block raises (any exception,
    ``KeyboardInterrupt`` too), then re-raise. A query sees all of the block or none of it."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # the error itself may have ended the transaction
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
