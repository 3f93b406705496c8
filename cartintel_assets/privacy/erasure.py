"""The right to erasure: remove one data subject from every store, log it without personal data,
and hand back a signed receipt. No Dagster (the CLI and `erasure_job` both call `erase`).

What each store does with the subject's rows:
- landing files: parquet rows and text lines that mention them are removed (the file rewritten
  atomically), so re-ingesting a day cannot bring them back;
- warehouse: every row of every table that mentions them in a text column (raw and quarantined,
  with quarantined raw text; features, labels, scores, plans, decision log, drift reference);
  then the warehouse file is rewritten, so deleted rows leave no bytes behind;
- the service's contact ledger (SQLite): their contacts, then VACUUM;
- reports (Evidently pages, the dashboard) and MLflow artifacts: rows of tables (JSON with
  `columns`/`data`, CSV, JSON lines) are removed; a page that shows them is deleted (the next
  materialisation rebuilds it) — the dashboard is rebuilt at once;
- registered model versions that may have learned from their rows are tagged (`erased_rows`,
  `erased_rows_since`): promotion refuses them after the grace period unless retrained or
  certified (README "Privacy").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cartintel_assets import settings
from cartintel_assets.ingestion.mapping import record_erasure
from cartintel_assets.privacy.subject import (
    SQLITE_MATCH,
    TEXT_SUFFIXES,
    Stores,
    Subject,
    files_under,
    matching,
    mentions_mask,
    sqlite_files,
    sqlite_text_columns,
    text_columns,
    with_regexp,
)
from cartintel_assets.registry.names import ERASED_SINCE_TAG, ERASED_TAG, REGISTERED_MODELS
from cartintel_assets.warehouse.connection import Warehouse

log = logging.getLogger("cartintel.erase")

LOCAL_RECEIPT_KEY = "cartintel-local-development-receipt-key"
LOG_TABLE = "erasure_log"
LOG_COLUMNS = {
    "erasure_id": "VARCHAR",
    "erased_at": "TIMESTAMP",
    "reason": "VARCHAR",
    "stores": "VARCHAR",  # JSON: counts per store, no identifier
    "model_versions": "VARCHAR",  # JSON
    "receipt_sha256": "VARCHAR",
}


class ErasureError(RuntimeError):
    """The subject is in a place erasure cannot safely rewrite (named in the message)."""


def receipt_key() -> str:
    """Key that signs erasure receipts: $CARTINTEL_RECEIPT_KEY (required outside local
    development, see `settings.secret`)."""
    return settings.secret("CARTINTEL_RECEIPT_KEY", LOCAL_RECEIPT_KEY) or LOCAL_RECEIPT_KEY


def receipts_dir(stores: Stores) -> Path:
    return stores.warehouse.parent / "erasure" / "receipts"


@dataclass
class Found:
    """What one store held on the subject: rows (or lines) per table or file, files removed."""

    rows: dict[str, int] = field(default_factory=dict)
    files_removed: list[str] = field(default_factory=list)

    def add(self, where: str, n: int) -> None:
        if n:
            self.rows[where] = self.rows.get(where, 0) + n

    @property
    def total(self) -> int:
        return sum(self.rows.values()) + len(self.files_removed)

    def summary(self) -> dict[str, Any]:
        return {
            "rows": sum(self.rows.values()),
            "by_place": dict(sorted(self.rows.items())),
            "files_removed": sorted(self.files_removed),
        }


# ---- landing, reports and artifacts: files ---------------------------------------------------


def _without_rows(table: pa.Table, subject: Subject) -> tuple[pa.Table, int]:
    """`table` without the rows that mention the subject in a text column."""
    kept = table.filter(pc.invert(mentions_mask(table, subject)))
    return kept, table.num_rows - kept.num_rows


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    """Write a new version of `path` beside it, then swap it in (no half-written file)."""
    tmp = path.with_name(f".{path.name}.erasing")
    write(tmp)
    os.replace(tmp, path)


def _erase_lines(path: Path, subject: Subject) -> int:
    """Drop the lines of a text file that mention the subject; how many."""
    rx = subject.regex()
    data = path.read_bytes()
    lines = data.decode("utf-8", errors="surrogateescape").splitlines(keepends=True)
    kept = [line for line in lines if not rx.search(line)]
    if len(kept) < len(lines):
        out = "".join(kept).encode("utf-8", errors="surrogateescape")
        _replace(path, lambda tmp: tmp.write_bytes(out))
    return len(lines) - len(kept)


def _json_rows_of(doc: Any) -> list[Any] | None:
    """The rows of a JSON table: MLflow's `log_table` and input examples (`columns` and `data`,
    or `dataframe_split`), or a top-level list; None for any other document."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        if isinstance(doc.get("data"), list):
            return doc["data"]
        split = doc.get("dataframe_split")
        if isinstance(split, dict) and isinstance(split.get("data"), list):
            return split["data"]
    return None


def _erase_json_table(path: Path, subject: Subject) -> int | None:
    """Drop the rows of a JSON table that mention the subject; how many, or None when the file
    is no such table."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    rows = _json_rows_of(doc)
    if rows is None:
        return None
    kept = [r for r in rows if not subject.mentioned_in(json.dumps(r, default=str))]
    gone = len(rows) - len(kept)
    if gone:
        rows[:] = kept
        text = json.dumps(doc)
        _replace(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return gone


def _bytes_mention(path: Path, subject: Subject) -> bool:
    data = path.read_bytes()
    return any(i.encode() in data for i in subject.ids)


def erase_files(root: Path, subject: Subject, found: Found, rebuildable: bool) -> None:
    """Remove the subject from every file under `root`: rows of parquet and JSON tables, lines of
    line-oriented text; any other file that mentions them is deleted when it is `rebuildable`
    (a report), else erasure stops and names it."""
    for path in files_under(root):
        rel = str(path.relative_to(root))
        if path.suffix == ".parquet":
            kept, gone = _without_rows(pq.read_table(path), subject)
            if gone:
                _replace(path, partial(pq.write_table, kept))
                found.add(rel, gone)
        elif path.suffix in {".jsonl", ".csv", ".txt", ".tsv"}:
            found.add(rel, _erase_lines(path, subject))
        elif path.suffix == ".json":
            rows = _erase_json_table(path, subject)
            if rows is None:
                _erase_whole(path, rel, subject, found, rebuildable)
            else:
                found.add(rel, rows)
        elif path.suffix in TEXT_SUFFIXES:
            _erase_whole(path, rel, subject, found, rebuildable)
        elif path.suffix in {".sqlite", ".db", ".duckdb", ".wal", ".lock"}:
            continue  # databases: erased through SQL (`erase_sqlite`, `erase_warehouse`)
        elif _bytes_mention(path, subject):
            if not rebuildable:
                raise ErasureError(f"{path} mentions the subject and cannot be rewritten")
            path.unlink()
            found.files_removed.append(rel)


def _erase_whole(path: Path, rel: str, subject: Subject, found: Found, rebuildable: bool) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    if not subject.mentioned_in(text):
        return
    if not rebuildable:
        raise ErasureError(f"{path} mentions the subject and cannot be rewritten row by row")
    path.unlink()
    found.files_removed.append(rel)


# ---- databases ---------------------------------------------------------------------------------


def erase_warehouse(
    con: duckdb.DuckDBPyConnection, subject: Subject, found: Found
) -> tuple[datetime | None, str | None]:
    """Delete every row that mentions the subject in any text column of any table; return when
    the first of them was ingested and the first day they were of (None: no such row), for the
    models' tags."""
    ingested: datetime | None = None
    day: str | None = None
    for table, columns in text_columns(con).items():
        if table == LOG_TABLE:
            continue
        where, params = matching(columns, subject)
        have = {r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()}
        firsts = [
            f'CAST(min("{c}") AS {t})' if c in have else f"NULL::{t}"
            for c, t in (("ingested_at", "TIMESTAMP"), ("partition_date", "VARCHAR"))
        ]
        n, first_in, first_day = con.execute(
            f'SELECT count(*), {", ".join(firsts)} FROM "{table}" WHERE {where}', params
        ).fetchall()[0]
        if not n:
            continue
        if first_in is not None:
            ingested = first_in if ingested is None else min(ingested, first_in)
        if first_day is not None:
            day = first_day if day is None else min(day, first_day)
        con.execute(f'DELETE FROM "{table}" WHERE {where}', params)
        found.add(table, int(n))
    return ingested, day


def compact(path: Path) -> None:
    """Rewrite the DuckDB file so deleted rows leave no bytes behind (DuckDB reuses freed blocks
    but does not clear them). The caller holds the warehouse's writer lock."""
    fresh = path.with_name(f".{path.name}.compacting")
    fresh.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute(f"ATTACH '{fresh}' AS fresh")
        con.execute("COPY FROM DATABASE " + _db_name(con) + " TO fresh")
        con.execute("DETACH fresh")
    finally:
        con.close()
    os.replace(fresh, path)
    path.with_name(path.name + ".wal").unlink(missing_ok=True)


def _db_name(con: duckdb.DuckDBPyConnection) -> str:
    return str(con.execute("SELECT current_database()").fetchall()[0][0])


def erase_sqlite(root: Path, subject: Subject, found: Found) -> None:
    """Delete the subject's rows from every SQLite file under `root` (the contact ledger), then
    VACUUM so no page keeps them."""
    for path in sqlite_files(root):
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        try:
            with_regexp(db, subject)
            for table, columns in sqlite_text_columns(db).items():
                where, params = matching(columns, subject, SQLITE_MATCH)
                cur = db.execute(f'DELETE FROM "{table}" WHERE {where}', params)
                found.add(f"{path.relative_to(root)}:{table}", cur.rowcount)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
        finally:
            db.close()


# ---- models -------------------------------------------------------------------------------------


def tag_versions(
    store: Any, erasure_id: str, ingested: datetime | None, day: str | None, at: str
) -> list[dict[str, str]]:
    """Tag every registered version that may have learned from the subject's rows: created after
    the first of them was ingested and, when it says which days it learned from
    (`trained_through`), not trained only on days before theirs."""
    if ingested is None:
        return []
    tagged = []
    for name in REGISTERED_MODELS:
        for mv in store.client.search_model_versions(f"name = '{name}'"):
            created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC)
            if created.replace(tzinfo=None) < ingested:  # ingested_at: UTC, without a zone
                continue
            through = mv.tags.get("trained_through")
            if through and day and through < day:
                continue
            earlier = [e for e in mv.tags.get(ERASED_TAG, "").split(",") if e]
            store.client.set_model_version_tag(
                name, mv.version, ERASED_TAG, ",".join([*earlier, erasure_id])
            )
            if ERASED_SINCE_TAG not in mv.tags:
                store.client.set_model_version_tag(name, mv.version, ERASED_SINCE_TAG, at)
            tagged.append({"model": name, "version": str(mv.version)})
    return tagged


# ---- receipts -----------------------------------------------------------------------------------


def sign(body: dict[str, Any], key: str) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def verify(path: Path, key: str | None = None) -> dict[str, Any]:
    """The receipt at `path` if its signature holds; else a ValueError saying why."""
    doc = json.loads(path.read_text())
    signature = doc.pop("signature", None)
    if not isinstance(signature, str):
        raise ValueError(f"{path}: no signature")
    if not hmac.compare_digest(signature, sign(doc, key or receipt_key())):
        raise ValueError(f"{path}: the signature does not match: altered, or another key")
    return doc


@dataclass
class Erasure:
    """What one erasure did (its receipt), or that there was nothing to erase."""

    receipt: dict[str, Any] | None
    path: Path | None

    @property
    def noop(self) -> bool:
        return self.receipt is None


def erase(
    stores: Stores,
    subject: Subject,
    reason: str,
    store: Any,
    say: Callable[[str], None] = log.info,
    lock_timeout_s: float = 600.0,
) -> Erasure:
    """Remove the subject from every store; log the erasure and write a signed receipt. Holds the
    warehouse's writer lock throughout, so no run writes meanwhile. Nothing held: a no-op."""
    if not subject.ids:
        raise ValueError("no identifier of the subject to erase")
    key = receipt_key()  # before anything is erased: a deployment without the key fails here
    at = datetime.now(UTC).replace(microsecond=0)
    erasure_id = f"erasure-{at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    names = ("landing", "warehouse", "serving", "reports", "mlflow", "simulation")
    found = {s: Found() for s in names}
    wh = Warehouse(stores.warehouse, lock_timeout_s=lock_timeout_s)
    with wh.writer() as con:
        say("warehouse: every table's text columns")
        ingested, day = erase_warehouse(con, subject, found["warehouse"])
        con.execute("CHECKPOINT")
        say("landing files")
        erase_files(stores.landing, subject, found["landing"], rebuildable=False)
        record_erasure(stores.landing, found["landing"].rows, erasure_id, at.isoformat())
        say("the service's contact ledger")
        erase_sqlite(stores.serving, subject, found["serving"])
        say("reports")
        erase_files(stores.reports, subject, found["reports"], rebuildable=True)
        say("MLflow artifacts")
        erase_files(stores.mlruns, subject, found["mlflow"], rebuildable=True)
        if stores.simulation is not None:
            say("the simulated storefront's ground truth")
            erase_files(stores.simulation, subject, found["simulation"], rebuildable=False)
        if not any(f.total for f in found.values()):
            return Erasure(None, None)
        versions = tag_versions(store, erasure_id, ingested, day, at.isoformat())
        if _rebuild_dashboard(con, store, stores, found["reports"]):
            say("the dashboard rebuilt without them")
        body = {
            "erasure_id": erasure_id,
            "erased_at": at.isoformat(),
            "reason": reason,
            "stores": {k: v.summary() for k, v in found.items()},
            "model_versions": versions,
            "key_id": hashlib.sha256(key.encode()).hexdigest()[:12],
        }
        receipt = {**body, "signature": sign(body, key)}
        path = receipts_dir(stores) / f"{erasure_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(receipt, indent=2, sort_keys=True)
        path.write_text(text)
        cols = ", ".join(f'"{c}" {t}' for c, t in LOG_COLUMNS.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS {LOG_TABLE} ({cols})")
        con.execute(
            f"INSERT INTO {LOG_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
            [
                erasure_id,
                at.replace(tzinfo=None),
                reason,
                json.dumps(body["stores"]),
                json.dumps(versions),
                hashlib.sha256(text.encode()).hexdigest(),
            ],
        )
        con.execute("CHECKPOINT")
        con.close()
        say("warehouse file rewritten without the deleted rows' bytes")
        compact(stores.warehouse)
    return Erasure(receipt, path)


def _rebuild_dashboard(
    con: duckdb.DuckDBPyConnection, store: Any, stores: Stores, found: Found
) -> bool:
    """The dashboard, if it showed the subject, rebuilt at once from the erased warehouse."""
    from cartintel_assets.reporting.dashboard import page_path, publish

    page = page_path(stores.reports)
    if str(page.relative_to(stores.reports)) not in found.files_removed:
        return False
    publish(con, store, stores.reports, f"warehouse {stores.warehouse.name}, after erasure")
    return True
