"""Incremental rollups of the landed segment files, kept in a DuckDB database file.

:class:`RollupStore` is the one object the app holds: it opens the database
(:mod:`dashboard.database`, :mod:`dashboard.schema`), runs one refresh at a time
(:mod:`dashboard.fold`) and answers queries from any thread (:mod:`dashboard.queries`).
Queries read the small rollup tables, never the raw files, so their cost grows with the
number of distinct (minute, dimension) cells, not with reports.

Delivery semantics: every complete line (ending in ``\\n``) present when a refresh
starts is counted exactly once after that refresh returns. A half-written last line is
left for the next refresh. A line that is not a valid report (torn, corrupt) is counted
in ``bad_lines`` and otherwise ignored. If a file shrinks (the sink truncated a tail
after a crash) its rows are dropped and it is folded again from the start; if a file
disappears its rows are dropped. Each batch is one DuckDB transaction, so a query sees
a batch entirely or not at all.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import duckdb

from dashboard.database import connect
from dashboard.errors import StoreError
from dashboard.fold import Fold, RefreshResult
from dashboard.queries import RollupQueries
from dashboard.schema import ReportKind, migrate

__all__ = ["RollupStore"]


class RollupStore(RollupQueries):
    """The rollup database of one record directory; thread-safe (one writer at a time).

    Args:
        record_directory: the sink's ``--record-directory``.
        database: DuckDB file (created if missing); ``None`` keeps everything in memory.
        topics: topic name -> report kind (``visit``/``activity``).
        batch_bytes: most bytes folded per transaction, also within one large file
            (bounds memory and keeps the dashboard showing progress while it catches
            up on a large backlog); only a single longer line exceeds it.
        threads: DuckDB worker threads.
        memory_limit: DuckDB's memory limit, e.g. ``1GB``.
    """

    def __init__(
        self,
        record_directory: Path,
        database: Path | None,
        topics: dict[str, ReportKind],
        *,
        batch_bytes: int = 256 * 1024 * 1024,
        threads: int = 2,
        memory_limit: str = "1GB",
    ) -> None:
        self.record_directory = record_directory
        self.database = database
        self.topics = dict(topics)
        self.batch_bytes = batch_bytes
        self._threads = threads
        self._memory_limit = memory_limit
        self._con: duckdb.DuckDBPyConnection | None = None
        self._fold: Fold | None = None
        # Readers' connections are made from this one, never from the writer while it folds.
        self._reader_root: duckdb.DuckDBPyConnection | None = None
        self._reader_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()
        self._local = threading.local()
        #: Wall-clock ms at the start of the last completed refresh: every complete
        #: line that had landed by then is in the rollups ("data as of").
        self.as_of_ms: int | None = None
        #: Bumped by every refresh that changed the rollups.
        self.version = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Open (or create) the database; idempotent.

        Raises:
            DatabaseLockedError: another process has the database file open.
            StoreError: it cannot be opened or created for another reason.
        """
        if self._con is not None:
            return
        self._stopping.clear()
        if self.database is not None:
            try:
                self.database.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the dashboard database's directory {self.database.parent}: {exc}"
                ) from exc
            scratch_dir = self.database.parent / (self.database.name + ".scratch")
        else:
            scratch_dir = Path(tempfile.mkdtemp(prefix="footfall-dashboard-"))
        con = connect(self.database, threads=self._threads, memory_limit=self._memory_limit)
        self._con = con
        migrate(con)
        self._reader_root = con.cursor()
        scratch_dir.mkdir(parents=True, exist_ok=True)
        for stale in scratch_dir.glob("*.jsonl"):
            stale.unlink(missing_ok=True)
        self._fold = Fold(
            con,
            self.record_directory,
            self.topics,
            batch_bytes=self.batch_bytes,
            scratch_dir=scratch_dir,
            stopping=self._stopping,
        )

    def stop(self) -> None:
        """Close the database; idempotent. A running refresh stops after its current batch."""
        self._stopping.set()
        with self._write_lock:
            if self._con is not None:
                if self._reader_root is not None:
                    self._reader_root.close()
                    self._reader_root = None
                self._con.close()
                self._con = None
                self._fold = None

    def __enter__(self) -> RollupStore:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection for the calling thread (DuckDB connections are not shared by threads)."""
        root = self._reader_root
        if root is None:
            raise StoreError("the rollup store is not started")
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None or getattr(self._local, "owner", None) is not root:
            with self._reader_lock:
                cur = root.cursor()
            self._local.cursor = cur
            self._local.owner = root
        return cur

    # -- folding ---------------------------------------------------------------

    def refresh(self) -> RefreshResult:
        """Fold every complete line that landed since the last refresh (:mod:`dashboard.fold`)."""
        with self._write_lock:
            if self._fold is None:
                raise StoreError("the rollup store is not started")
            as_of = int(time.time() * 1000)
            result = self._fold.refresh()
            if result.files_folded or result.dropped_files or self.as_of_ms is None:
                self.version += 1
            self.as_of_ms = as_of
            return result
