"""The companion process of each service worker: it appends the worker's decisions to the
warehouse (`decision_log`) and watches the registry's aliases and the landed days, so the
worker never waits on DuckDB's lock or MLflow's SQL. No web code."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pandas as pd

from cartintel_assets.registry.tracking import Store
from cartintel_assets.serving.config import ServiceSettings
from cartintel_assets.serving.decision import DECISION_COLUMNS
from cartintel_assets.serving.models import registry_state
from cartintel_assets.warehouse.connection import Warehouse
from cartintel_assets.warehouse.tables import typed_temp_table

log = logging.getLogger("cartintel.serve")

HOUSEKEEPING_NICENESS = 10  # added to the companion processes' niceness


class DecisionWriter:
    """Appends decisions to the warehouse table `decision_log`. A flush waits briefly for the
    warehouse lock; if a run holds it, the rows stay queued for the next try."""

    def __init__(self, warehouse: Path) -> None:
        self.warehouse = Warehouse(warehouse, lock_timeout_s=2.0)
        self.pending: list[dict[str, Any]] = []
        self.written = 0

    def flush(self) -> int:
        """Write what is queued; return how many rows were written."""
        rows, self.pending = self.pending, []
        if not rows:
            return 0
        try:
            with self.warehouse.writer() as con:
                cols = ", ".join(f'"{c}" {t}' for c, t in DECISION_COLUMNS.items())
                con.execute(f"CREATE TABLE IF NOT EXISTS decision_log ({cols})")
                typed_temp_table(con, pd.DataFrame(rows), DECISION_COLUMNS, "_decisions")
                con.execute("INSERT INTO decision_log SELECT * FROM _decisions")
        except Exception as err:  # keep them: nothing is lost while a run holds the warehouse
            self.pending[:0] = rows
            log.warning("decision log: %d rows wait for the warehouse (%s)", len(rows), err)
            return 0
        self.written += len(rows)
        return len(rows)


def housekeeping(cfg: ServiceSettings, tracking_uri: str, worker: Connection) -> None:
    """The companion process of a worker: every `flush_interval_s` it appends the decisions the
    worker handed over to the warehouse; every `reload_interval_s` it reads the registry's
    aliases, and every `snapshot_refresh_s` the latest landed day, and tells the worker what it
    found; with the aliases, the consent of customers files landed but not ingested yet
    (`consent.landed_consent`). Messages in: ("rows", [...]), ("flush", token), ("stop",). Out:
    ("ready", state) once, then ("aliases", state), ("landed", day), ("consent", {customer:
    (day, consent)}), ("logged", token, written, pending)."""
    logging.basicConfig(level=logging.WARNING)
    # its chores can wait; a request cannot: when the cores are busy, the scheduler runs the
    # workers first (each chore costs tens of milliseconds of CPU every few seconds)
    os.nice(HOUSEKEEPING_NICENESS)
    store = Store(tracking_uri)
    writer = DecisionWriter(cfg.warehouse)
    reader = Warehouse(cfg.warehouse, lock_timeout_s=60.0).reader
    every = {
        "flush": cfg.flush_interval_s,
        "aliases": cfg.reload_interval_s,
        "landed": cfg.snapshot_refresh_s,
        "consent": cfg.reload_interval_s,
    }

    from cartintel_assets import settings
    from cartintel_assets.serving.consent import landed_consent
    from cartintel_assets.warehouse.tables import has_table

    key = settings.pseudonym_key()
    seen: dict[Path, int] = {}
    # the latest ingested customers day, read with the landed day (not every few seconds: a
    # run holding the warehouse would hold up the decision log's writes)
    ingested: dict[str, Any] = {}

    def landed() -> str | None:
        with reader() as wh:
            last = wh.execute("SELECT max(partition_date) FROM raw_sessions").fetchall()[0][0]
            ingested["customers"] = (
                wh.execute("SELECT max(partition_date) FROM raw_customers").fetchall()[0][0]
                if has_table(wh, "raw_customers")
                else None
            )
        return None if last is None else str(last)

    def consent() -> None:
        changes = landed_consent(cfg.landing, key, ingested.get("customers"), seen)
        if changes:
            worker.send(("consent", changes))

    try:  # at start, as the worker's snapshot reads the warehouse then too
        landed()
    except Exception as err:  # no warehouse yet: every landed file counts until there is
        log.warning("the latest ingested day could not be read: %s", err)
    due = {k: time.monotonic() + s for k, s in every.items()}
    # ready once its imports are done and the registry answered: the worker waits for this, so
    # the start of this process does not slow the first requests
    worker.send(("ready", registry_state(store)))

    def flush(token: int | None = None, tries: int = 1) -> None:
        for _ in range(tries):
            if writer.flush() or not writer.pending:
                break
        worker.send(("logged", token, writer.written, len(writer.pending)))

    chores: dict[str, Callable[[], None]] = {
        "aliases": lambda: worker.send(("aliases", registry_state(store))),
        "consent": consent,
        "landed": lambda: worker.send(("landed", landed())),
        "flush": flush,
    }
    while True:
        try:
            wait = max(0.0, min(due.values()) - time.monotonic())
            msg: tuple[Any, ...] = worker.recv() if worker.poll(wait) else ("tick",)
        except EOFError:  # the worker is gone: write what it handed over
            msg = ("stop",)
        if msg[0] == "rows":
            writer.pending.extend(msg[1])
        elif msg[0] == "flush":
            flush(msg[1])
        elif msg[0] == "stop":
            flush(tries=5)  # outwait a short run holding the warehouse
            if writer.pending:
                log.error("decision log: %d rows not written at stop", len(writer.pending))
            with contextlib.suppress(OSError):
                worker.send(None)
            return
        now = time.monotonic()
        for chore, at in due.items():
            if now >= at:
                due[chore] = now + every[chore]
                try:
                    chores[chore]()
                except Exception as err:  # the worker keeps serving what it has
                    log.warning("%s failed: %s", chore, err)
