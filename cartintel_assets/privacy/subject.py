"""One data subject across every store cartintel keeps: which identifiers are theirs, and where
rows or files mention them. Erasure (`privacy.erasure`) and subject access (`privacy.access`)
walk the same stores with the same matching, so what one finds the other removes. No Dagster.

A subject is known by their raw customer id (as landed, in the landing files and quarantined raw
text) and its pseudonym (the keyed hash in the warehouse, the decision log and the contact
ledger); their sessions carry no customer id in the events, so the session ids found beside
either id are identifiers of the subject too.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cartintel_assets.ingestion.ingest import pseudonymise
from cartintel_assets.warehouse.connection import Warehouse

# an identifier is a whole token: not part of a longer id (C0001 is not inside C00012)
_EDGE = "A-Za-z0-9_"
TEXT_SUFFIXES = {".jsonl", ".csv", ".txt", ".json", ".html", ".md", ".yaml", ".yml"}


def id_pattern(ids: set[str]) -> str:
    """A regular expression (RE2 and Python alike) matching any of `ids` as a whole token."""
    alts = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
    return f"(^|[^{_EDGE}])({alts})($|[^{_EDGE}])"


@dataclass
class Subject:
    """The identifiers of one data subject."""

    customer_ids: set[str] = field(default_factory=set)  # raw, as landed
    pseudonyms: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)

    @property
    def ids(self) -> set[str]:
        return self.customer_ids | self.pseudonyms | self.sessions

    @property
    def pattern(self) -> str:
        return id_pattern(self.ids)

    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern)

    def mentioned_in(self, text: str) -> bool:
        return bool(self.ids) and self.regex().search(text) is not None


@dataclass(frozen=True)
class Stores:
    """Where cartintel keeps data: each one a setting (`cartintel_assets.settings`)."""

    landing: Path
    warehouse: Path
    reports: Path
    serving: Path  # the service's contact ledger (and any other SQLite file it keeps)
    mlruns: Path
    simulation: Path | None = None  # the simulated storefront's ground truth, when there is one

    @classmethod
    def from_settings(cls, landing: Path | None = None, warehouse: Path | None = None) -> Stores:
        """Every store where the settings put it (a Dagster run passes its resources' landing
        folder and warehouse)."""
        from cartintel_assets import settings

        warehouse = warehouse or settings.warehouse_path()
        return cls(
            landing=landing or settings.landing_dir(),
            warehouse=warehouse,
            reports=settings.reports_dir(),
            serving=warehouse.parent / "serving",
            mlruns=settings.mlruns_dir(),
            simulation=settings.storefront_dir() / "truth",
        )


def files_under(root: Path) -> Iterator[Path]:
    """Every regular file under `root` (none if it does not exist), in a stable order."""
    if root.is_dir():
        yield from sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _landing_ids(path: Path) -> pa.Table | None:
    """The customer and session id columns of a landing file (None: it has neither)."""
    if path.suffix == ".parquet":
        names = set(pq.read_schema(path).names)
        cols = [c for c in ("customer_id", "session_id") if c in names]
        return pq.read_table(path, columns=cols) if cols else None
    if path.suffix == ".jsonl":
        text = path.read_text(encoding="utf-8", errors="replace")
        if '"customer_id"' not in text:  # events: sessions are found beside customers
            return None
        rows = []
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a malformed line: matched by its text when erased
            if isinstance(rec, dict) and ("customer_id" in rec or "session_id" in rec):
                rows.append(
                    {k: _text(rec.get(k)) for k in ("customer_id", "session_id") if k in rec}
                )
        return pa.Table.from_pylist(rows) if rows else None
    return None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def identify(
    stores: Stores,
    key: str,
    customer: str | None = None,
    pseudonym: str | None = None,
) -> Subject:
    """The subject's identifiers: the raw id and its pseudonym (from either, resolving a
    pseudonym's raw id through the landing files), and every session beside either of them in a
    landing file or a warehouse table."""
    if not customer and not pseudonym:
        raise ValueError("name the subject: a raw customer id or its pseudonym")
    subject = Subject()
    if customer:
        subject.customer_ids.add(customer)
        subject.pseudonyms.add(pseudonymise([customer], key)[0])
    if pseudonym:
        subject.pseudonyms.add(pseudonym)
    for path in files_under(stores.landing):
        table = _landing_ids(path)
        if table is None:
            continue
        if "customer_id" in table.column_names:
            raw = {v for v in table.column("customer_id").unique().to_pylist() if v}
            for value, hashed in zip(sorted(raw), pseudonymise(sorted(raw), key), strict=True):
                if hashed in subject.pseudonyms:
                    subject.customer_ids.add(value)
            if "session_id" in table.column_names:
                mask = pc.is_in(
                    table.column("customer_id"),
                    value_set=pa.array(sorted(subject.customer_ids), pa.string()),
                )
                found = table.filter(pc.fill_null(mask, False)).column("session_id")
                subject.sessions |= {s for s in found.to_pylist() if s}
    if stores.warehouse.exists():
        with Warehouse(stores.warehouse).reader() as con:  # waits for a run that writes
            ids = sorted(subject.customer_ids | subject.pseudonyms)
            for table in tables_with(con, "customer_id", "session_id"):
                found = con.execute(
                    f'SELECT DISTINCT session_id FROM "{table}" WHERE customer_id IN'
                    f" ({', '.join('?' * len(ids))}) AND session_id IS NOT NULL",
                    ids,
                ).fetchall()
                subject.sessions |= {r[0] for r in found}
    return subject


def tables_with(con: duckdb.DuckDBPyConnection, *columns: str) -> list[str]:
    """Base tables of the main schema having every one of `columns`."""
    found = con.execute(
        "SELECT table_name FROM information_schema.columns c JOIN information_schema.tables t"
        " USING (table_catalog, table_schema, table_name) WHERE t.table_type = 'BASE TABLE'"
        " AND t.table_schema = 'main' AND t.table_catalog = current_database()"
        f" AND column_name IN ({', '.join('?' * len(columns))})"
        " GROUP BY table_name HAVING count(DISTINCT column_name) = ? ORDER BY table_name",
        [*columns, len(columns)],
    ).fetchall()
    return [r[0] for r in found]


def text_columns(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Each base table of the main schema and its text columns (where an id can be)."""
    found = con.execute(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c JOIN"
        " information_schema.tables t USING (table_catalog, table_schema, table_name)"
        " WHERE t.table_type = 'BASE TABLE' AND t.table_schema = 'main'"
        " AND t.table_catalog = current_database() AND c.data_type = 'VARCHAR'"
        " ORDER BY c.table_name, c.ordinal_position"
    ).fetchall()
    out: dict[str, list[str]] = {}
    for table, column in found:
        out.setdefault(table, []).append(column)
    return out


def mentions_mask(table: pa.Table, subject: Subject) -> pa.Array:
    """For each row of an Arrow table: whether a text column mentions the subject."""
    hits = pa.array([False] * table.num_rows, pa.bool_())
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            found = pc.fill_null(pc.match_substring_regex(col, subject.pattern), False)
            hits = pc.or_(hits, found)
    return hits


DUCKDB_MATCH = 'regexp_matches("{}", ?)'
SQLITE_MATCH = '"{}" REGEXP ?'  # with `with_regexp`


def matching(
    columns: list[str], subject: Subject, match: str = DUCKDB_MATCH
) -> tuple[str, list[str]]:
    """The WHERE clause of the rows that mention the subject in any of the text `columns`, and
    its parameters (`match`: one column's test in the database's SQL)."""
    return " OR ".join(match.format(c) for c in columns), [subject.pattern] * len(columns)


def sqlite_files(root: Path) -> list[Path]:
    """The SQLite databases under `root` (the service's contact ledger)."""
    return [p for p in files_under(root) if p.suffix in {".sqlite", ".db"}]


def sqlite_text_columns(db: sqlite3.Connection) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for (table,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall():
        cols = [r[1] for r in db.execute(f'PRAGMA table_info("{table}")') if r[2] == "TEXT"]
        if cols:
            out[table] = cols
    return out


def with_regexp(db: sqlite3.Connection, subject: Subject) -> None:
    """Give SQLite the REGEXP function (it has none built in) for the subject's pattern."""
    rx = subject.regex()
    db.create_function(
        "regexp",
        2,
        lambda _p, v: v is not None and rx.search(str(v)) is not None,
        deterministic=True,
    )
