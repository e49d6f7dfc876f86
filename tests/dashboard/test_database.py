"""The store's DuckDB seams on their own: the transaction helper, opening a file another
process holds, and the schema migration."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from dashboard.database import connect, transaction
from dashboard.errors import DatabaseLockedError
from dashboard.schema import SCHEMA_VERSION, migrate


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    c.execute("CREATE TABLE t (x INTEGER)")
    yield c
    c.close()


def _rows(con: duckdb.DuckDBPyConnection) -> list[int]:
    return [x for (x,) in con.execute("SELECT x FROM t ORDER BY x").fetchall()]


def test_transaction_commits_the_block(con: duckdb.DuckDBPyConnection) -> None:
    with transaction(con) as tx:
        tx.execute("INSERT INTO t VALUES (1), (2)")
    # A second connection sees only committed rows.
    assert [x for (x,) in con.cursor().execute("SELECT x FROM t ORDER BY x").fetchall()] == [1, 2]


@pytest.mark.parametrize("error", [ValueError("boom"), KeyboardInterrupt()])
def test_transaction_rolls_back_and_reraises(con: duckdb.DuckDBPyConnection, error: BaseException) -> None:
    con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(type(error)), transaction(con):
        con.execute("INSERT INTO t VALUES (2)")
        con.execute("DELETE FROM t WHERE x = 1")
        raise error
    assert _rows(con) == [1]
    with transaction(con):  # the connection is usable again: no transaction left open
        con.execute("INSERT INTO t VALUES (3)")
    assert _rows(con) == [1, 3]


def test_transaction_rolls_back_after_a_failed_statement(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(duckdb.Error), transaction(con):
        con.execute("INSERT INTO t VALUES (7)")
        con.execute("INSERT INTO no_such_table VALUES (1)")
    assert _rows(con) == []


def test_a_database_another_process_holds_is_a_locked_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "dash.duckdb"
    hold = f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('open', flush=True); sys.stdin.read()"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        with pytest.raises(DatabaseLockedError) as caught:
            connect(path, threads=1, memory_limit="100MB")
        assert (caught.value.path, caught.value.pid) == (path, holder.pid)
    finally:
        holder.kill()
        holder.wait()
    connect(path, threads=1, memory_limit="100MB").close()  # free again once it exits


def test_migrate_keeps_the_current_schema_and_rebuilds_another() -> None:
    con = duckdb.connect()
    migrate(con)
    con.execute("INSERT INTO r_count VALUES (1, 10, 0, 5)")
    migrate(con)  # same version: the rows stay
    assert con.execute("SELECT sum(n) FROM r_count").fetchone() == (5,)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION - 1)])
    migrate(con)  # another version: derived data, dropped and folded again
    assert con.execute("SELECT count(*) FROM r_count").fetchone() == (0,)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
