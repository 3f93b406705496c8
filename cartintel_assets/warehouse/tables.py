"""Small DuckDB helpers shared by every writer: atomic replacement of a slice of a table."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import pandas as pd


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Commit what the block wrote, or roll all of it back if the block raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the warehouse has a table (or view) of that name yet."""
    found = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchall()
    return bool(found[0][0])


def has_columns(con: duckdb.DuckDBPyConnection, name: str, *columns: str) -> bool:
    """Whether table `name` exists with every one of `columns` (a warehouse older than a
    contract's optional columns lacks them until its next ingestion adds them)."""
    found = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [name]
    ).fetchall()
    return bool(found) and set(columns) <= {r[0] for r in found}


def typed_temp_table(
    con: duckdb.DuckDBPyConnection, frame: pd.DataFrame, columns: dict[str, str], into: str
) -> None:
    """Keep `frame`'s `columns` in the temporary table `into`, cast to the given SQL types (so an
    empty frame, whose pandas types say nothing, still makes a well-typed table)."""
    missing = set(columns) - set(frame.columns)
    if missing:
        raise ValueError(f"{into}: the frame lacks columns {sorted(missing)}")
    select = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in columns.items())
    con.register("_typed_frame", frame[list(columns)])
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {into} AS SELECT {select} FROM _typed_frame")
    finally:
        con.unregister("_typed_frame")


def require_tables(con: duckdb.DuckDBPyConnection, *names: str) -> None:
    """Fail with a clear message when an upstream table has not been materialised yet."""
    missing = [n for n in names if not has_table(con, n)]
    if missing:
        raise ValueError(f"no {', '.join(missing)} in the warehouse yet: materialise it first")


def replace_table(
    con: duckdb.DuckDBPyConnection,
    table: str,
    frame: pd.DataFrame,
    columns: dict[str, str] | None = None,
) -> None:
    """Replace a whole table by `frame` in one statement (typed by `columns` when given)."""
    if columns is not None:
        typed_temp_table(con, frame, columns, "_replacement_table")
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _replacement_table")
        return
    con.register("_replacement_frame", frame)
    try:
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _replacement_frame")
    finally:
        con.unregister("_replacement_frame")


def replace_rows(
    con: duckdb.DuckDBPyConnection,
    table: str,
    frame: pd.DataFrame,
    where: str,
    params: Sequence[Any],
) -> None:
    """Atomically replace the rows of `table` matching `where` by `frame` (same column order)."""
    with transaction(con):
        con.execute(f"DELETE FROM {table} WHERE {where}", list(params))
        con.register("_replacement", frame)
        try:
            con.execute(f"INSERT INTO {table} SELECT * FROM _replacement")
        finally:
            con.unregister("_replacement")


def replace_partition(con: duckdb.DuckDBPyConnection, table: str, source: str, day: Any) -> None:
    """Replace one day of a derived table by the rows of table `source` plus `partition_date`,
    creating the table with the source's column types the first time. A column the source
    gained since (a feature added in a later version) is added to the table, empty in the days
    written before it, so a warehouse outlives the code that created it."""
    select = f"SELECT *, CAST(? AS DATE) AS partition_date FROM {source}"
    with transaction(con):
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS {select} LIMIT 0", [day])
        have = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
        for name, sql_type, *_ in con.execute(f"DESCRIBE {source}").fetchall():
            if name not in have:
                con.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" {sql_type}')
        con.execute(f"DELETE FROM {table} WHERE partition_date = ?", [day])
        con.execute(f"INSERT INTO {table} BY NAME {select}", [day])
