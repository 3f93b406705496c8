"""What the service reads besides a request: an in-memory DuckDB copy of the reference data the
features read (prices, shipping quotes, reviews, customer history summarised by the same SQL as
batch), plus consent, segments and earlier contacts; from it, the `FeatureReference` of each day,
built once by the batch's own functions. It is copied from the warehouse under the warehouse's
shared lock and then never touches the file again, so the service never blocks a Dagster run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import pandas as pd

from cartintel_assets.decisions.plan import latest_consent_sql
from cartintel_assets.features.session_features import (
    SESSION_SUMMARY_SQL,
    FeatureReference,
    duckdb_query,
    feature_reference,
    reviews_timeline,
)

HISTORY_TABLE = "session_history"

Reader = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]

# contacts that count towards the caps, as the daily plan counts them, plus the service's own
_CONTACTS = {
    "raw_interventions": "SELECT customer_id, assigned_at AS sent_at FROM raw_interventions"
    " WHERE treatment <> 'control'",
    "intervention_plan": "SELECT customer_id, send_at AS sent_at FROM intervention_plan"
    " WHERE action <> 'none'",
}


class Snapshot:
    """The reference data the features read, consent, segments and contacts, in memory."""

    def __init__(self, reader: Reader, history_days: int = 365) -> None:
        from cartintel_assets.warehouse.tables import has_table

        started = time.monotonic()
        self.con = duckdb.connect(":memory:", config={"threads": 1})
        with reader() as wh:
            last = wh.execute("SELECT max(partition_date) FROM raw_sessions").fetchall()[0]
            if last[0] is None:
                raise LookupError("the warehouse has no landed sessions yet: ingest a day first")
            self.last_day: date = last[0]
            self.first_day = self.last_day - timedelta(days=history_days)
            window = {"first": self.first_day, "last": self.last_day}

            def copy(table: str, sql: str, params: dict[str, Any] | None = None) -> None:
                frame = wh.sql(sql, params=params or {}).to_arrow_table()  # noqa: F841 (read by SQL)
                self.con.execute(f"CREATE TABLE {table} AS SELECT * FROM frame")

            copy(
                "raw_products",
                "SELECT * FROM raw_products WHERE partition_date >= $first - 31",
                {"first": self.first_day},
            )
            copy("raw_shipping_quotes", "SELECT * FROM raw_shipping_quotes")
            copy(
                "raw_reviews", "SELECT product_id, ts, rating FROM raw_reviews ORDER BY product_id"
            )
            copy(
                HISTORY_TABLE,
                f"{SESSION_SUMMARY_SQL} ORDER BY customer_id",
                {"history_from": self.first_day, "history_to": self.last_day},
            )
            copy("consent", latest_consent_sql())
            segments = (
                "SELECT customer_id, segment_name FROM customer_segments"
                if has_table(wh, "customer_segments")
                else "SELECT NULL::VARCHAR AS customer_id, NULL::VARCHAR AS segment_name LIMIT 0"
            )
            copy("segments", segments)
            parts = [sql for table, sql in _CONTACTS.items() if has_table(wh, table)]
            if has_table(wh, "decision_log"):
                parts.append(
                    # the service's own recommendations, at the moment they were for
                    "SELECT customer_id, cutoff_at AS sent_at FROM decision_log"
                    " WHERE action <> 'none'"
                )
            # UNION: a planned contact the storefront acted on is also in its interventions
            # feed, at the same time; it is one contact
            copy("contacts", " UNION ".join(parts) if parts else "SELECT NULL LIMIT 0")
            self.sessions = int(
                wh.execute(
                    "SELECT count(*) FROM raw_sessions WHERE partition_date BETWEEN $first AND $last",
                    window,
                ).fetchall()[0][0]
            )
        self.consent = dict(self.con.execute("SELECT * FROM consent").fetchall())
        self.segment = dict(self.con.execute("SELECT * FROM segments").fetchall())
        self.contacts: dict[str, list[pd.Timestamp]] = {}
        if self.con.execute("SELECT count(*) FROM contacts").fetchall()[0][0]:
            for cid, at in self.con.execute("SELECT * FROM contacts").fetchall():
                self.contacts.setdefault(str(cid), []).append(pd.Timestamp(at))
        self._days: set[date] = set()
        self._lock = threading.Lock()
        self.history_days = history_days
        self._reviews = reviews_timeline(duckdb_query(self.con))
        self._references: dict[date, FeatureReference] = {}
        self.reference(max(self.last_day, datetime.now(UTC).date()))  # today's, built up front
        self.seconds = time.monotonic() - started

    def reference(self, day: date) -> FeatureReference:
        """What the features of a session started on `day` read besides its events: that day's
        catalogue and quotes, the reviews, and the customer history of the year before, built
        once per day by the same functions as batch."""
        ref = self._references.get(day)
        if ref is not None:
            return ref
        self.ensure_day(day)
        with self._lock:
            if day not in self._references:
                self._references[day] = feature_reference(
                    duckdb_query(self.con.cursor()),
                    [day],
                    day - timedelta(days=self.history_days),
                    day,
                    HISTORY_TABLE,
                    reviews=self._reviews,
                )
                for old in sorted(self._references)[:-4]:  # a few days around midnight suffice
                    del self._references[old]
            return self._references[day]

    def ensure_day(self, day: date) -> None:
        """Prices and shipping quotes of a day that has not landed yet are those of the latest
        landed day (the catalogue and carrier rates in force), copied once under the new date."""
        if day <= self.last_day or day in self._days:
            return
        with self._lock:
            if day in self._days:
                return
            for table in ("raw_products", "raw_shipping_quotes"):
                cols = [
                    r[0]
                    for r in self.con.execute(f"DESCRIBE {table}").fetchall()
                    if r[0] != "partition_date"
                ]
                self.con.execute(
                    f"INSERT INTO {table} ({', '.join(cols)}, partition_date)"
                    f" SELECT {', '.join(cols)}, $day FROM {table} WHERE partition_date = $last",
                    {"day": day, "last": self.last_day},
                )
            self._days.add(day)
