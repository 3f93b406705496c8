"""The companion process of each service worker: it moves the decisions the workers spooled into
the warehouse (`decision_log`, `serving.spool`) and watches the registry's aliases and the landed
days, so the worker never waits on DuckDB's lock or MLflow's SQL. No web code."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from cartintel_assets.registry.tracking import Store
from cartintel_assets.serving.config import ServiceSettings
from cartintel_assets.serving.models import registry_state
from cartintel_assets.serving.spool import DecisionSpool
from cartintel_assets.warehouse.connection import Warehouse

log = logging.getLogger("cartintel.serve")

HOUSEKEEPING_NICENESS = 10  # added to the companion processes' niceness
DRAIN_SLICE = 50_000  # decisions moved from the spool per warehouse transaction


def housekeeping(cfg: ServiceSettings, tracking_uri: str, worker: Connection) -> None:
    """The companion process of a worker: at start and every `flush_interval_s` it moves the
    spooled decisions to the warehouse; every `reload_interval_s` it reads the registry's
    aliases, and every `snapshot_refresh_s` the latest landed day, and tells the worker what it
    found; with the aliases, the consent of customers files landed but not ingested yet
    (`consent.landed_consent`). Messages in: ("flush", token), ("stop",). Out:
    ("ready", state) once, then ("aliases", state), ("landed", day), ("consent", {customer:
    (day, consent)}), ("logged", token, written, pending)."""
    logging.basicConfig(level=logging.WARNING)
    # its chores can wait; a request cannot: when the cores are busy, the scheduler runs the
    # workers first (each chore costs tens of milliseconds of CPU every few seconds)
    os.nice(HOUSEKEEPING_NICENESS)
    store = Store(tracking_uri)
    spool = DecisionSpool(cfg.spool)
    log_to = Warehouse(cfg.warehouse, lock_timeout_s=2.0)  # waits briefly for a run
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

    logged = {"written": 0, "waiting": 0}

    def flush(token: int | None = None, tries: int = 1) -> None:
        for _ in range(tries):
            try:
                wrote = DRAIN_SLICE
                while wrote == DRAIN_SLICE:  # a long backlog in slices, the lock let go between
                    wrote, logged["waiting"] = spool.drain(log_to, DRAIN_SLICE)
                    logged["written"] += wrote
                break
            except Exception as err:  # kept in the spool: nothing is lost while a run holds it
                logged["waiting"] = spool.waiting(0)
                log.warning(
                    "decision log: %d rows wait for the warehouse (%s)", logged["waiting"], err
                )
        worker.send(("logged", token, logged["written"], logged["waiting"]))

    flush()  # what a crashed or stopped service left in the spool, first
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
        except EOFError:  # the worker is gone: move what is spooled
            msg = ("stop",)
        if msg[0] == "flush":
            flush(msg[1])
        elif msg[0] == "stop":
            flush(tries=5)  # outwait a short run holding the warehouse
            if logged["waiting"]:
                log.warning(
                    "decision log: %d rows stay in the spool %s for the next start",
                    logged["waiting"],
                    cfg.spool,
                )
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
