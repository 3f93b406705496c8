"""Subject access: everything cartintel holds on one data subject, each record with its source
and the purpose it is held for. Walks the same stores as erasure, with the same matching
(`privacy.subject`), so what the export shows is what an erasure removes. No Dagster."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

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
from cartintel_assets.warehouse.connection import Warehouse

# why each store holds what it holds (a table's prefix or name; the first match wins)
PURPOSES: tuple[tuple[str, str], ...] = (
    ("raw_", "ingested as landed, after the data contract's checks: the source of every feature"),
    ("quarantine_", "rows that broke the data contract, kept with the reason for review"),
    ("cart_sessions", "carts reconstructed from the events, for features and labels"),
    ("session_features", "behaviour and friction features that predict abandonment"),
    ("abandonment_labels", "the outcome of each cart, to train and evaluate the risk model"),
    ("abandonment_scores", "the risk model's scores, to decide which carts to act on"),
    ("intervention_plan", "the daily plan: which carts get which intervention, within the rules"),
    ("decision_log", "the scoring service's decisions, for audit and off-policy evaluation"),
    ("customer_segments", "the shopper's segment, to choose interventions by intent"),
    ("drift_reference", "the reference sample drift monitoring compares new data with"),
    ("review_signals", "review sentiment by product, a friction signal"),
    ("contacts", "contacts sent, to enforce contact caps and the day's budget"),
    ("landing", "the feed as received from the storefront, before ingestion"),
    ("mlflow", "a training run's sample or report, for reproducibility and review"),
    ("reports", "a monitoring or dashboard page"),
    ("simulation", "the simulated storefront's ground truth (demo and tests only)"),
)


def purpose(place: str) -> str:
    name = place.rsplit(":", 1)[-1]
    for prefix, why in PURPOSES:
        if name.startswith(prefix) or place.startswith(prefix):
            return why
    return "derived from the above by the pipeline"


def _source(store: str, place: str, records: list[Any], why: str | None = None) -> dict[str, Any]:
    return {"store": store, "place": place, "purpose": why or purpose(place), "records": records}


def _warehouse(path: Path, subject: Subject) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    with Warehouse(path).reader() as con:  # waits for a run that writes
        for table, columns in text_columns(con).items():
            where, params = matching(columns, subject)
            frame = con.execute(f'SELECT * FROM "{table}" WHERE {where}', params).df()
            if not frame.empty:
                rows = json.loads(frame.to_json(orient="records", date_format="iso"))
                out.append(_source("warehouse", table, rows))
    return out


def _files(root: Path, store: str, subject: Subject) -> list[dict[str, Any]]:
    out = []
    rx = subject.regex()
    for path in files_under(root):
        rel = str(path.relative_to(root))
        records: list[Any] = []
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            records = table.filter(mentions_mask(table, subject)).to_pylist()
        elif path.suffix in {".jsonl", ".csv", ".txt", ".tsv"}:
            text = path.read_text(encoding="utf-8", errors="replace")
            records = [line for line in text.splitlines() if rx.search(line)]
        elif path.suffix in TEXT_SUFFIXES and subject.mentioned_in(
            path.read_text(encoding="utf-8", errors="replace")
        ):
            records = [f"the file {rel} mentions the subject (a page or document)"]
        if records:
            why = purpose(store)
            out.append(_source(store, rel, json.loads(json.dumps(records, default=str)), why))
    return out


def _sqlite(root: Path, subject: Subject) -> list[dict[str, Any]]:
    out = []
    for path in sqlite_files(root):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            with_regexp(db, subject)
            for table, columns in sqlite_text_columns(db).items():
                where, params = matching(columns, subject, SQLITE_MATCH)
                rows = db.execute(f'SELECT * FROM "{table}" WHERE {where}', params).fetchall()
                if rows:
                    place = f"{path.relative_to(root)}:{table}"
                    out.append(_source("serving", place, [dict(r) for r in rows]))
        finally:
            db.close()
    return out


def export(stores: Stores, subject: Subject) -> dict[str, Any]:
    """Every record held on the subject, grouped by where it is held and why."""
    sources = [
        *_files(stores.landing, "landing", subject),
        *_warehouse(stores.warehouse, subject),
        *_sqlite(stores.serving, subject),
        *_files(stores.reports, "reports", subject),
        *_files(stores.mlruns, "mlflow", subject),
        *(_files(stores.simulation, "simulation", subject) if stores.simulation else []),
    ]
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "subject": {
            "customer_ids": sorted(subject.customer_ids),
            "pseudonyms": sorted(subject.pseudonyms),
            "sessions": sorted(subject.sessions),
        },
        "sources": sources,
        "note": "pseudonyms are a keyed hash of the customer id (README 'Privacy')",
    }
