"""The decision spool: every decision the service answers is first written here, in a SQLite file
of the service (WAL), before its response is sent; a companion process later moves it to the
warehouse table `decision_log` exactly once. A kill -9 of any of the service's processes then
loses no decision it answered, and doubles none:

- `append` commits a batch's rows (SQLite keeps a committed transaction through a process crash);
- `drain` writes the rows above the warehouse's mark for this spool and the new mark in one
  DuckDB transaction, and only then deletes them from the spool: a crash before that commit
  leaves them to the next drain, one after it leaves rows the mark already skips.

The mark is keyed by the spool's own id (made when its file is created), so a new spool file
starts from nothing rather than from an older file's sequence numbers. No web code.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from cartintel_assets.serving.decision import DECISION_COLUMNS, json_scalar
from cartintel_assets.serving.ledger import ServiceDatabase
from cartintel_assets.settings import crash_point
from cartintel_assets.warehouse.connection import Warehouse
from cartintel_assets.warehouse.tables import transaction, typed_temp_table

MARKS = "decision_spool_marks"  # warehouse table: (spool, seq) moved so far


def _encode(value: Any) -> Any:
    """What `json.dumps` cannot write itself: times as ISO text, NumPy scalars as Python's."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return json_scalar(value)


class DecisionSpool:
    """Decisions answered but not yet in the warehouse, shared by the service's processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = ServiceDatabase(path, timeout_s=30.0)
        db = self._db()
        db.execute(
            "CREATE TABLE IF NOT EXISTS decisions"
            " (seq INTEGER PRIMARY KEY AUTOINCREMENT, decision TEXT NOT NULL)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS spool (id TEXT NOT NULL)")
        db.execute("BEGIN IMMEDIATE")
        if db.execute("SELECT count(*) FROM spool").fetchone()[0] == 0:
            db.execute("INSERT INTO spool VALUES (?)", [uuid.uuid4().hex])
        db.execute("COMMIT")
        self.id = str(db.execute("SELECT id FROM spool").fetchone()[0])

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Commit `rows` (decision-log rows) to the spool, in one transaction."""
        if not rows:
            return
        text = [json.dumps(r, default=_encode) for r in rows]
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO decisions (decision) VALUES (?)", [(t,) for t in text])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def waiting(self, after: int) -> int:
        """How many rows above sequence number `after` wait in the spool."""
        found = self._db().execute("SELECT count(*) FROM decisions WHERE seq > ?", [after])
        return int(found.fetchone()[0])

    def drain(self, warehouse: Warehouse, limit: int) -> tuple[int, int]:
        """Move up to `limit` rows into `decision_log`, exactly once; (rows written, rows still
        waiting). Raises while a run holds the warehouse (the rows stay for the next try)."""
        with warehouse.writer() as con:
            cols = ", ".join(f'"{c}" {t}' for c, t in DECISION_COLUMNS.items())
            con.execute(f"CREATE TABLE IF NOT EXISTS decision_log ({cols})")
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {MARKS} (spool VARCHAR PRIMARY KEY, seq BIGINT)"
            )
            found = con.execute(f"SELECT seq FROM {MARKS} WHERE spool = ?", [self.id]).fetchall()
            mark = int(found[0][0]) if found else 0
            rows = (
                self._db()
                .execute(
                    "SELECT seq, decision FROM decisions WHERE seq > ? ORDER BY seq LIMIT ?",
                    [mark, limit],
                )
                .fetchall()
            )
            if rows:
                frame = pd.DataFrame([json.loads(d) for _, d in rows])
                typed_temp_table(con, frame, DECISION_COLUMNS, "_decisions")
                with transaction(con):
                    con.execute("INSERT INTO decision_log SELECT * FROM _decisions")
                    con.execute(
                        f"INSERT OR REPLACE INTO {MARKS} VALUES (?, ?)", [self.id, rows[-1][0]]
                    )
                mark = int(rows[-1][0])
        crash_point("decisions.written")
        self._db().execute("DELETE FROM decisions WHERE seq <= ?", [mark])
        return len(rows), self.waiting(mark)
