"""The contact ledger: a small SQLite file shared by the service's worker processes, where each
recommended contact is claimed atomically against the contact caps and the day's budget."""

from __future__ import annotations

import sqlite3
import threading
from datetime import date
from pathlib import Path

import pandas as pd

from cartintel_assets.decisions.plan import PlanRules


class ServiceDatabase:
    """A SQLite file of the service's worker processes (WAL), with one connection per thread:
    autocommit, so every transaction is explicit, and a committed one survives a process
    crash. Call it for this thread's connection."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.timeout_s = timeout_s
        self._local = threading.local()
        self().execute("PRAGMA journal_mode=WAL")

    def __call__(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db


class ContactLedger:
    """Contacts the service recommended, shared by its worker processes (SQLite, WAL): a claim
    checks the caps against earlier contacts and the day's budget, and records the contact, in
    one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = ServiceDatabase(path, timeout_s=5.0)
        db = self._db()
        db.execute(
            "CREATE TABLE IF NOT EXISTS contacts (customer_id TEXT NOT NULL, sent_at TEXT NOT"
            " NULL, day TEXT NOT NULL, expected_cost REAL NOT NULL, request_id TEXT NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS contacts_customer ON contacts (customer_id)")
        db.execute("CREATE INDEX IF NOT EXISTS contacts_day ON contacts (day)")

    def spent(self, day: date) -> float:
        db = self._db()
        row = db.execute(
            "SELECT coalesce(sum(expected_cost), 0) FROM contacts WHERE day = ?",
            [day.isoformat()],
        ).fetchone()
        return float(row[0])

    def contacts_of(self, customers: list[str]) -> dict[str, list[pd.Timestamp]]:
        out: dict[str, list[pd.Timestamp]] = {}
        if not customers:
            return out
        db = self._db()
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
        db = self._db()
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
