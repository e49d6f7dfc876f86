"""The fold: newly landed lines of the segment files into the rollup tables.

Segment files are append-only: the sink only ever adds complete lines at the end of a
file (and, after a crash, truncates a torn tail and writes the *same* records again).
So every file is folded by byte range: the ``files`` table remembers, per file, how many
bytes were folded, and each :meth:`Fold.refresh` folds only the complete lines that
landed since.

Refresh steps, in order (each numbered write is one DuckDB transaction, so a query sees
a batch entirely or not at all):

1. List the segment files of both topics (:func:`dashboard.segments.list_segments`). A
   segment is closed when a later one of its partition exists, in (generation, start
   offset) order.
2. Compare each file's size with what was folded: skip unchanged files, reset shrunk
   ones, drop vanished ones.
3. Cut the new bytes into batches of at most ``batch_bytes`` (a file larger than that is
   folded over several batches; only a single line longer than the limit makes a batch
   bigger): a closed segment not folded before that fits in the batch is read in place;
   any other range is cut at its last newline and copied to a scratch file first (an
   open segment keeps growing while DuckDB would read it).
4. In one transaction per batch and kind: insert the batch's rollup rows (minute and day
   grain, :mod:`dashboard.rollups`), add new users to the dictionary, link new (poi,
   user, minute) rows to the pair's previous visit, record each line's report key and the
   reports now landed more than once (for distinct counting), mark the touched days
   dirty, advance the files' folded offsets.
5. Recount distinct users for the dirty days; rebuild the pair links if a file was
   dropped.
6. Compact the rows of segments that became closed after being folded in pieces.

A refresh interrupted by its ``stopping`` event stops between batches; the rest is folded
by the next one.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from pathlib import Path

import duckdb

from dashboard import rollups
from dashboard.database import transaction
from dashboard.schema import GROUP_KEYS, ROLLUP_TABLES, ReportKind
from dashboard.segments import SegmentFile, list_segments

__all__ = ["FileState", "Fold", "RefreshResult"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class FileState:
    """What the store remembers about one file."""

    file_id: int
    folded_bytes: int
    pieces: int


@dataclasses.dataclass(frozen=True, slots=True)
class RefreshResult:
    """What one refresh did."""

    files_seen: int
    files_folded: int
    reports: dict[str, int]
    bad_lines: int
    bytes_folded: int
    dropped_files: int
    seconds: float


@dataclasses.dataclass(slots=True)
class _Piece:
    segment: SegmentFile
    file_id: int
    read_path: Path  # the segment itself, or a scratch copy of the new complete lines
    start: int  # file offset of the piece's first byte
    new_folded: int
    scratch: bool


_Queue = collections.deque[tuple[SegmentFile, FileState | None]]


class Fold:
    """Folds what landed in ``record_directory`` over the writer connection ``con``.

    Not thread-safe: the caller runs one refresh at a time (:class:`dashboard.store.RollupStore`).

    Args:
        con: the database's writer connection.
        record_directory: the sink's ``--record-directory``.
        topics: topic name -> report kind.
        batch_bytes: most bytes folded per transaction (step 3).
        scratch_dir: where copies of open segments' new lines are made (emptied after each batch).
        stopping: set to end a refresh between batches.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        record_directory: Path,
        topics: dict[str, ReportKind],
        *,
        batch_bytes: int,
        scratch_dir: Path,
        stopping: threading.Event,
    ) -> None:
        self._con = con
        self._record_directory = record_directory
        self._topics = topics
        self._batch_bytes = batch_bytes
        self._scratch_dir = scratch_dir
        self._stopping = stopping

    def refresh(self) -> RefreshResult:
        """Fold every complete line that landed since the last refresh (module docstring)."""
        started = time.monotonic()
        con = self._con
        # 1. list the files
        segments = list_segments(self._record_directory, self._topics)
        known = {
            str(path): FileState(fid, folded, pieces)
            for fid, path, folded, pieces in con.execute(
                "SELECT file_id, path, folded_bytes, pieces FROM files"
            ).fetchall()
        }
        # 2. compare with what was folded
        on_disk = {str(s.path) for s in segments}
        dropped = 0
        for path, gone in known.items():
            if path not in on_disk:
                self._drop_file(gone.file_id, delete_file_row=True)
                dropped += 1
        pending: list[tuple[SegmentFile, FileState | None]] = []
        for seg in segments:
            state = known.get(str(seg.path))
            if state is not None and seg.size < state.folded_bytes:
                log.warning(
                    "segment shrank; folding it again",
                    extra={"path": str(seg.path), "size": seg.size, "folded": state.folded_bytes},
                )
                self._drop_file(state.file_id, delete_file_row=False)
                state = FileState(state.file_id, 0, 0)
            if state is not None and seg.size == state.folded_bytes:
                if seg.closed and state.pieces > 1:
                    self._compact(state.file_id)
                continue
            pending.append((seg, state))
        # 3./4. fold in batches
        reports = dict.fromkeys(("visit", "activity"), 0)
        bad = 0
        folded_bytes = 0
        folded_files: set[int] = set()
        queue: _Queue = collections.deque(pending)
        while queue:
            if self._stopping.is_set():
                break  # shutting down: the rest is folded next time
            try:
                pieces = self._next_batch(queue)
                for kind in ("visit", "activity"):
                    of_kind = [p for p in pieces if p.segment.kind == kind]
                    if not of_kind:
                        continue
                    good, broken = self._fold_batch(kind, of_kind)
                    reports[kind] += good
                    bad += broken
                    folded_files.update(p.file_id for p in of_kind)
                    folded_bytes += sum(p.new_folded - p.start for p in of_kind)
            finally:
                for scratch in self._scratch_dir.glob("*.jsonl"):
                    scratch.unlink(missing_ok=True)
        # 5. recount distinct users for the days that changed; relink pairs after drops
        self._recount_days()
        self._rebuild_pairs_if_stale()
        # 6. compact pieces of segments that are now closed
        for seg, _ in pending:
            if seg.closed:
                row = con.execute("SELECT file_id, pieces FROM files WHERE path = ?", [str(seg.path)]).fetchone()
                if row is not None and row[1] > 1:
                    self._compact(row[0])
        return RefreshResult(
            files_seen=len(segments),
            files_folded=len(folded_files),
            reports=reports,
            bad_lines=bad,
            bytes_folded=folded_bytes,
            dropped_files=dropped,
            seconds=time.monotonic() - started,
        )

    def _next_batch(self, queue: _Queue) -> list[_Piece]:
        """Take pieces off ``queue`` until they hold ``batch_bytes``; a file cut short goes
        back to the front with its new offset, to continue in the next batch."""
        pieces: list[_Piece] = []
        budget = self._batch_bytes
        while queue and budget > 0:
            seg, state = queue.popleft()
            if state is None:
                state = self._add_file(seg)
            piece = self._prepare(seg, state, budget)
            if piece is None:
                continue
            pieces.append(piece)
            budget -= piece.new_folded - piece.start
            if seg.size - state.folded_bytes > budget + (piece.new_folded - piece.start):
                # The budget cut this file short: the rest goes into the next batch.
                queue.appendleft((seg, FileState(state.file_id, piece.new_folded, state.pieces + 1)))
                break
        return pieces

    def _add_file(self, seg: SegmentFile) -> FileState:
        row = self._con.execute(
            "INSERT INTO files VALUES (nextval('file_ids'), ?, ?, ?, 0, 0, 0, 0) RETURNING file_id",
            [str(seg.path), seg.topic, seg.kind],
        ).fetchone()
        assert row is not None
        return FileState(int(row[0]), 0, 0)

    def _prepare(self, seg: SegmentFile, state: FileState, budget: int) -> _Piece | None:
        """The next piece of ``seg``: its complete lines from the folded offset, at most
        ``budget`` bytes of them (or one line, if a single line is longer)."""
        todo = seg.size - state.folded_bytes
        if seg.closed and state.folded_bytes == 0 and todo <= budget:
            # Closed segments never change: DuckDB may read them in place.
            return _Piece(seg, state.file_id, seg.path, 0, seg.size, scratch=False)
        # Possibly open: copy only the complete lines in [folded, size) - the file may
        # grow while DuckDB reads it, and its last line may be half-written.
        try:
            with seg.path.open("rb") as f:
                f.seek(state.folded_bytes)
                data = f.read(min(todo, budget))
                end = data.rfind(b"\n")
                if end < 0 and len(data) < todo:  # one line longer than the budget
                    data += f.read(todo - len(data))
                    end = data.find(b"\n")
        except FileNotFoundError:
            return None
        if end < 0:
            return None
        scratch = self._scratch_dir / f"{state.file_id}-{state.folded_bytes}.jsonl"
        scratch.write_bytes(data[: end + 1])
        return _Piece(seg, state.file_id, scratch, state.folded_bytes, state.folded_bytes + end + 1, scratch=True)

    def _fold_batch(self, kind: ReportKind, pieces: list[_Piece]) -> tuple[int, int]:
        """Step 4 for one kind's pieces of a batch; returns (reports, bad lines)."""
        with transaction(self._con) as con:
            con.execute("CREATE OR REPLACE TEMP TABLE batch_files (filename VARCHAR, file_id INTEGER)")
            con.executemany("INSERT INTO batch_files VALUES (?, ?)", [[str(p.read_path), p.file_id] for p in pieces])
            con.execute(
                "CREATE OR REPLACE TEMP TABLE raw AS SELECT f.file_id, r.* EXCLUDE (filename) "
                "FROM read_json($files, format = 'newline_delimited', columns = $columns, "
                "ignore_errors = true, filename = true, maximum_object_size = 1048576) r "
                "JOIN batch_files f USING (filename)",
                {"files": [str(p.read_path) for p in pieces], "columns": rollups.COLUMNS[kind]},
            )
            con.execute(f"CREATE OR REPLACE TEMP TABLE valid AS SELECT * FROM raw WHERE {rollups.VALID[kind]}")  # noqa: S608
            con.execute(
                "INSERT INTO users SELECT u, nextval('user_keys') FROM (SELECT DISTINCT userId AS u FROM valid) "
                "WHERE u NOT IN (SELECT user_id FROM users)"
            )
            con.execute(
                "CREATE OR REPLACE TEMP TABLE batch AS SELECT valid.*, users.user_key FROM valid "
                "JOIN users ON users.user_id = valid.userId"
            )
            lines = dict(con.execute("SELECT file_id, count(*) FROM raw GROUP BY file_id").fetchall())
            good_counts = dict(con.execute("SELECT file_id, count(*) FROM batch GROUP BY file_id").fetchall())
            for sql in rollups.ROLLUPS[kind]:
                con.execute(sql)
            if kind == "visit":
                for sql in rollups.PAIR_STEPS:
                    con.execute(sql)
            con.execute(rollups.KEYED[kind])
            for sql in rollups.DEDUPE_STEPS:
                con.execute(sql)
            con.executemany(
                "UPDATE files SET folded_bytes = ?, pieces = pieces + 1, lines = lines + ?, "
                "bad_lines = bad_lines + ? WHERE file_id = ?",
                [
                    [
                        p.new_folded,
                        good_counts.get(p.file_id, 0),
                        lines.get(p.file_id, 0) - good_counts.get(p.file_id, 0),
                        p.file_id,
                    ]
                    for p in pieces
                ],
            )
            con.execute("DROP TABLE raw")
            con.execute("DROP TABLE valid")
            con.execute("DROP TABLE batch")
        good = sum(good_counts.values())
        return good, sum(lines.values()) - good

    def _rebuild_pairs_if_stale(self) -> None:
        con = self._con
        if con.execute("SELECT 1 FROM meta WHERE key = 'pairs_stale'").fetchone() is None:
            return
        started = time.monotonic()
        with transaction(con):
            for sql in rollups.PAIR_REBUILD:
                con.execute(sql)
        log.info("rebuilt pair_minutes after dropped rows", extra={"seconds": round(time.monotonic() - started, 3)})

    def _recount_days(self) -> None:
        with transaction(self._con) as con:
            days = [d for (d,) in con.execute("SELECT DISTINCT day FROM dirty_days ORDER BY day").fetchall()]
            if days:
                # The BETWEEN lets zonemaps skip row groups (rows are clustered by day).
                where = "day BETWEEN $lo AND $hi AND list_contains($days, day)"
                params = {"lo": days[0], "hi": days[-1], "days": days}
                con.execute(f"DELETE FROM c_user_day WHERE {where}", params)  # noqa: S608
                con.execute(
                    "INSERT INTO c_user_day "  # noqa: S608 - where is a constant
                    f"SELECT day, kind, count(DISTINCT user_key) FROM r_user_day WHERE {where} GROUP BY day, kind "
                    f"UNION ALL SELECT day, 2, count(DISTINCT user_key) FROM r_user_day WHERE {where} GROUP BY day",
                    params,
                )
                con.execute("DELETE FROM dirty_days")

    def _drop_file(self, file_id: int, *, delete_file_row: bool) -> None:
        with transaction(self._con) as con:
            con.execute("INSERT INTO dirty_days SELECT DISTINCT day FROM r_user_day WHERE file_id = ?", [file_id])
            for sql in rollups.DEDUPE_DROP:
                con.execute(sql, {"file": file_id} if "$file" in sql else None)
            con.execute("INSERT OR REPLACE INTO meta VALUES ('pairs_stale', '1')")
            for table in ROLLUP_TABLES:
                con.execute(f"DELETE FROM {table} WHERE file_id = ?", [file_id])  # noqa: S608
            if delete_file_row:
                con.execute("DELETE FROM files WHERE file_id = ?", [file_id])
            else:
                con.execute(
                    "UPDATE files SET folded_bytes = 0, pieces = 0, lines = 0, bad_lines = 0 WHERE file_id = ?",
                    [file_id],
                )

    def _compact(self, file_id: int) -> None:
        """Merge the per-piece rows of a closed segment folded in several pieces."""
        with transaction(self._con) as con:
            for table, keys in GROUP_KEYS.items():
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE compacted AS SELECT file_id, {keys}, sum(n)::BIGINT AS n "  # noqa: S608
                    f"FROM {table} WHERE file_id = ? GROUP BY file_id, {keys}",
                    [file_id],
                )
                con.execute(f"DELETE FROM {table} WHERE file_id = ?", [file_id])  # noqa: S608
                con.execute(f"INSERT INTO {table} SELECT * FROM compacted")  # noqa: S608
            con.execute(
                "CREATE OR REPLACE TEMP TABLE compacted AS SELECT DISTINCT * FROM r_user_day WHERE file_id = ?",
                [file_id],
            )
            con.execute("DELETE FROM r_user_day WHERE file_id = ?", [file_id])
            con.execute("INSERT INTO r_user_day SELECT * FROM compacted")
            con.execute("DROP TABLE compacted")
            con.execute("UPDATE files SET pieces = 1 WHERE file_id = ?", [file_id])
