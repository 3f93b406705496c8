"""The contact ledger: a small SQLite file shared by the service's worker processes, where each
recommended contact is claimed atomically against the contact caps and the day's budget."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pandas as pd

from cartintel_assets.decisions.plan import PlanRules


class ContactLedger:
    """Contacts the service recommended, shared by its worker processes (SQLite, WAL): a claim
    checks the caps against earlier contacts and the day's budget, and records the contact, in
    one transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS contacts (customer_id TEXT NOT NULL, sent_at TEXT NOT"
                " NULL, day TEXT NOT NULL, expected_cost REAL NOT NULL, request_id TEXT NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS contacts_customer ON contacts (customer_id)")
            db.execute("CREATE INDEX IF NOT EXISTS contacts_day ON contacts (day)")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        yield db

    def spent(self, day: date) -> float:
        with self._db() as db:
            row = db.execute(
                "SELECT coalesce(sum(expected_cost), 0) FROM contacts WHERE day = ?",
                [day.isoformat()],
            ).fetchone()
        return float(row[0])

    def contacts_of(self, customers: list[str]) -> dict[str, list[pd.Timestamp]]:
        out: dict[str, list[pd.Timestamp]] = {}
        if not customers:
            return out
        with self._db() as db:
            marks = ",".join("?" * len(customers))
            for cid, at in db.execute(
                f"SELECT customer_id, sent_at FROM contacts WHERE customer_id IN ({marks})",
                customers,
            ):
                out.setdefault(cid, []).append(pd.Timestamp(at))
        return out

    def claim(
        self,
        customer: str,
        at: pd.Timestamp,
        cost: float,
        request_id: str,
        earlier: list[pd.Timestamp],
        rules: PlanRules,
    ) -> str | None:
        """Record a contact unless it breaks a cap or the day's budget; the reason if it does."""
        day = at.date().isoformat()
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                spent = db.execute(
                    "SELECT coalesce(sum(expected_cost), 0) FROM contacts WHERE day = ?", [day]
                ).fetchone()[0]
                if spent + cost > rules.budget + 1e-9:
                    db.execute("ROLLBACK")
                    return "budget exhausted"
                mine = [
                    pd.Timestamp(r[0])
                    for r in db.execute(
                        "SELECT sent_at FROM contacts WHERE customer_id = ?", [customer]
                    )
                ]
                # the same contact may be known twice (ledger, and the logged decision)
                why = rules.contact.violation(sorted({*earlier, *mine}), at)
                if why:
                    db.execute("ROLLBACK")
                    return why
                db.execute(
                    "INSERT INTO contacts VALUES (?, ?, ?, ?, ?)",
                    [customer, at.isoformat(), day, cost, request_id],
                )
                db.execute("COMMIT")
                return None
            except BaseException:
                db.execute("ROLLBACK")
                raise
